"""PostgreSQL reads and writes: sluice beside ConnectorX, Polars and psql, interleaved.

Read: a table of ROWS rows (bigint id, int, numeric(12,2), text, timestamptz, boolean, date,
double) to Parquet in 2 partitions by `sluice ingest`, by ConnectorX (`partition_num=2`,
then pyarrow's Parquet writer) and by Polars `read_database_uri` (ConnectorX engine, then
`write_parquet`). Write: the same rows from Parquet into a table by `sluice ingest --to
postgres://`, beside psql's `\\copy` of the same rows as CSV. Each round runs every tool
once, in turn; medians and ratios to sluice are printed. Peak memory of sluice's read at
ROWS and 4 x ROWS rows (max RSS of the process).

    python3 bench/postgres.py --sluice target/release/sluice --url postgres://... [--rows N]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def make_table(url, name, rows):
    psql(url, f"DROP TABLE IF EXISTS {name}")
    psql(url, f"""CREATE TABLE {name} AS SELECT g::bigint AS id, (g % 100000)::int AS n,
        round((g % 100000) * 1.37, 2)::numeric(12,2) AS amount, 'label ' || (g % 5000) AS label,
        timestamptz '2024-01-01 00:00+00' + g * interval '1 second' AS at, g % 3 = 0 AS flag,
        date '2020-01-01' + (g % 2000) AS day, g / 7.0::double precision AS ratio
        FROM generate_series(1, {rows}) g""")
    psql(url, f"VACUUM ANALYZE {name}")


def timed(cmd, env=None):
    """Seconds and peak RSS (MiB) of one run of `cmd` in a fresh Python child."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "r = subprocess.run(sys.argv[1:])\n"
             "s = time.perf_counter() - t\n"
             "print(s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
             "sys.exit(r.returncode)\n")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True,
                         capture_output=True, text=True, env=env)
    secs, rss = out.stdout.strip().splitlines()[-1].split()
    return float(secs), float(rss)


CX_READ = """
import sys, connectorx as cx, pyarrow.parquet as pq
t = cx.read_sql(sys.argv[1], "SELECT * FROM {table}", partition_on="id", partition_num=2, return_type="arrow")
pq.write_table(t, sys.argv[2])
print(t.num_rows, file=sys.stderr)
"""

PL_READ = """
import sys, polars as pl
df = pl.read_database_uri("SELECT * FROM {table}", sys.argv[1], engine="connectorx", partition_on="id", partition_num=2)
df.write_parquet(sys.argv[2])
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-pg-bench-")
    try:
        make_table(a.url, "bench", a.rows)
        size = psql(a.url, "SELECT pg_size_pretty(pg_table_size('bench'))")
        print(f"table bench: {a.rows:,} rows, {size}")
        tools = {
            "sluice": lambda out: [a.sluice, "ingest", a.url, "--table", "public.bench",
                                   "--partition-column", "id", "--partitions", "2",
                                   "--to", out, "--quiet"],
            "connectorx": lambda out: [sys.executable, "-c", CX_READ.format(table="bench"), a.url,
                                       out + ".parquet"],
            "polars": lambda out: [sys.executable, "-c", PL_READ.format(table="bench"), a.url,
                                   out + ".parquet"],
        }
        times = {k: [] for k in tools}
        for r in range(a.rounds):
            for name, cmd in tools.items():
                out = os.path.join(work, f"{name}-{r}")
                secs, _ = timed(cmd(out))
                times[name].append(secs)
                shutil.rmtree(out, ignore_errors=True)
                if os.path.exists(out + ".parquet"):
                    os.remove(out + ".parquet")
        base = statistics.median(times["sluice"])
        print("read to Parquet (2 partitions), median of", a.rounds, "rounds:")
        for name, t in times.items():
            m = statistics.median(t)
            print(f"  {name:11s} {m:7.2f} s   {m / base:5.2f}x sluice   runs: {', '.join(f'{x:.2f}' for x in t)}")

        # Write: the same rows from Parquet (sluice's) vs psql \copy of CSV.
        src = os.path.join(work, "src")
        subprocess.run(tools["sluice"](src), check=True)
        csv = os.path.join(work, "bench.csv")
        subprocess.run(["psql", a.url, "-X", "-q", "-c", f"\\copy bench TO '{csv}' CSV"], check=True)
        psql(a.url, "DROP TABLE IF EXISTS bench_load; CREATE TABLE bench_load (LIKE bench)")
        wtimes = {"sluice": [], "psql \\copy": []}
        for r in range(a.rounds):
            psql(a.url, "TRUNCATE bench_load")
            secs, _ = timed([a.sluice, "ingest", src, "--to", a.url, "--table", "public.bench_load",
                             "--mode", "append", "--quiet"])
            wtimes["sluice"].append(secs)
            assert psql(a.url, "SELECT count(*) FROM bench_load") == str(a.rows)
            psql(a.url, "TRUNCATE bench_load")
            secs, _ = timed(["psql", a.url, "-X", "-q", "-c", f"\\copy bench_load FROM '{csv}' CSV"])
            wtimes["psql \\copy"].append(secs)
        base = statistics.median(wtimes["sluice"])
        print("write from Parquet/CSV into a table, median of", a.rounds, "rounds:")
        for name, t in wtimes.items():
            m = statistics.median(t)
            print(f"  {name:11s} {m:7.2f} s   {m / base:5.2f}x sluice   runs: {', '.join(f'{x:.2f}' for x in t)}")

        # Memory as the table grows 4x.
        print("sluice read peak RSS:")
        for mult in (1, 4):
            make_table(a.url, "bench_mem", a.rows * mult)
            out = os.path.join(work, f"mem-{mult}")
            secs, rss = timed([a.sluice, "ingest", a.url, "--table", "public.bench_mem",
                               "--partition-column", "id", "--partitions", "2", "--to", out, "--quiet"])
            print(f"  {a.rows * mult:>11,} rows: {rss:7.1f} MiB, {secs:.2f} s")
            shutil.rmtree(out, ignore_errors=True)
        psql(a.url, "DROP TABLE IF EXISTS bench_mem; DROP TABLE IF EXISTS bench_load")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
