#!/usr/bin/env python3
"""End-to-end benchmark: sluice beside DuckDB and Polars on the same generated data.

Runs each job with every engine, interleaved (engine order shuffled each round, since the
machine is shared and noisy), checks that all engines agree on the results, and prints wall
time, CPU time, peak memory, CPU/wall and the ratio to the fastest peer. Peers run only when
installed (bench/run.sh installs them into bench/.venv).

usage: run.py --sluice PATH --data DIR [--rounds 3] [--jobs a,b] [--data4 DIR]
"""

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SQL = ("SELECT country, category, count(*) AS n, round(sum(amount), 2) AS total, "
       "round(avg(quantity), 4) AS q FROM t GROUP BY country, category ORDER BY country, category")


def have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def commands(engine, job, data, out, sluice):
    """The command line that runs `job` with `engine`, writing to `out`."""
    py = sys.executable
    many, big, drift = f"{data}/many", f"{data}/big.csv", f"{data}/drift"
    if engine == "sluice":
        if job == "csv_to_parquet":
            return [sluice, "ingest", many, "--to", out, "-q"]
        if job == "drift_union":
            return [sluice, "ingest", drift, "--to", out, "-q"]
        src = many if job == "groupby_many" else big
        return ["sh", "-c", f'"$0" query "$1" -t "t=$2" --output csv > "$3"', sluice, SQL, src, out]
    if engine == "duckdb":
        read = {
            "csv_to_parquet": f"read_csv('{many}/*.csv')",
            "drift_union": f"read_csv('{drift}/*.csv', union_by_name=true)",
            "groupby_many": f"read_csv('{many}/*.csv')",
            "groupby_big": f"read_csv('{big}')",
        }[job]
        if job in ("csv_to_parquet", "drift_union"):
            q = f"COPY (SELECT * FROM {read}) TO '{out}/data.parquet' (FORMAT parquet, COMPRESSION zstd)"
        else:
            q = f"COPY ({SQL.replace('FROM t', 'FROM ' + read)}) TO '{out}' (HEADER)"
        code = f"import duckdb, os\nos.makedirs({out!r}, exist_ok=True) if {job in ('csv_to_parquet', 'drift_union')!r} else None\nduckdb.sql({q!r})"
        return [py, "-c", code]
    if engine == "polars":
        if job == "csv_to_parquet":
            code = (f"import polars as pl, os\nos.makedirs({out!r})\n"
                    f"pl.scan_csv({many + '/*.csv'!r}, try_parse_dates=True).sink_parquet({out + '/data.parquet'!r}, compression='zstd')")
        elif job == "drift_union":
            code = (f"import polars as pl, os, glob\nos.makedirs({out!r})\n"
                    f"fs = sorted(glob.glob({drift + '/*.csv'!r}))\n"
                    f"pl.concat([pl.scan_csv(f, try_parse_dates=True) for f in fs], how='diagonal_relaxed')"
                    f".sink_parquet({out + '/data.parquet'!r}, compression='zstd')")
        else:
            src = many + "/*.csv" if job == "groupby_many" else big
            code = (f"import polars as pl\n"
                    f"df = pl.scan_csv({src!r}).group_by('country', 'category').agg("
                    f"pl.len().alias('n'), pl.col('amount').sum().round(2).alias('total'), "
                    f"pl.col('quantity').mean().round(4).alias('q')).sort('country', 'category').collect()\n"
                    f"df.write_csv({out!r})")
        return [py, "-c", code]
    raise ValueError(engine)


def measure(cmd):
    """Runs a command; returns (wall s, cpu s, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


SUMMARIZE = r"""
import csv, json, sys
import duckdb
path, job = sys.argv[1], sys.argv[2]
if job.startswith("groupby"):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = [(r["country"], r["category"], int(r["n"]), round(float(r["total"]), 2),
            round(float(r["q"]), 3)) for r in rows]
else:
    src = f"read_parquet('{path}/**/*.parquet')"
    cols = duckdb.sql(f"DESCRIBE SELECT * FROM {src}").fetchall()
    row = duckdb.sql(f"SELECT count(*), round(sum(amount), 2), sum(quantity::DOUBLE), "
                     f"count(DISTINCT country), count(ts), max(ts)::VARCHAR FROM {src}").fetchall()[0]
    out = {"rows": row[0], "amount": row[1], "quantity": row[2], "countries": row[3],
           "ts_count": row[4], "ts_max": row[5], "ts_type": [c[1] for c in cols if c[0] == "ts"],
           "columns": sorted(c[0] for c in cols)}
print(json.dumps(out))
"""


def summarize(path, job):
    """What every engine must agree on: group rows, or row count and column sums.

    Runs in a child process so that this runner stays small: a forked child's peak RSS
    starts from its parent's, which would inflate every measurement."""
    out = subprocess.run([sys.executable, "-c", SUMMARIZE, path, job], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data4", help="the same data at 4x size, for the memory comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", default="csv_to_parquet,groupby_many,groupby_big,drift_union")
    ap.add_argument("--json", help="write raw results here")
    args = ap.parse_args()

    engines = ["sluice"] + [e for e in ("duckdb", "polars") if have(e)]
    missing = {"duckdb", "polars"} - set(engines)
    if missing:
        print(f"note: {', '.join(sorted(missing))} not installed: not run", file=sys.stderr)
    jobs = args.jobs.split(",")
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    results = {}
    lines = []
    rng = random.Random(7)
    try:
        for job in jobs:
            samples = {e: [] for e in engines}
            answers = {}
            for rnd in range(args.rounds):
                order = engines[:]
                rng.shuffle(order)
                for engine in order:
                    out = os.path.join(work, f"{job}-{engine}")
                    shutil.rmtree(out, ignore_errors=True)
                    if os.path.isfile(out):
                        os.remove(out)
                    samples[engine].append(measure(commands(engine, job, args.data, out, args.sluice)))
                    if rnd == 0:
                        answers[engine] = summarize(out, job)
            ref = answers["sluice"]
            for engine, ans in answers.items():
                if ans != ref:
                    print(f"DISAGREE on {job}: sluice={json.dumps(ref, default=str)[:600]}\n"
                          f"  {engine}={json.dumps(ans, default=str)[:600]}", file=sys.stderr)
                    sys.exit(1)
            med = {e: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v),
                       max(s[2] for s in v)) for e, v in samples.items()}
            peers = [med[e][0] for e in engines if e != "sluice"]
            fastest = min(peers) if peers else None
            results[job] = {e: {"wall_s": m[0], "cpu_s": m[1], "peak_mib": m[2]} for e, m in med.items()}
            lines.append(f"\n{job}  (median of {args.rounds}, all engines agree)")
            lines.append(f"  {'engine':8} {'wall s':>8} {'cpu s':>8} {'cpu/wall':>9} {'peak MiB':>9} {'vs fastest peer':>16}")
            for e in engines:
                w, c, m = med[e]
                ratio = f"{w / fastest:.2f}x" if fastest else "-"
                lines.append(f"  {e:8} {w:8.2f} {c:8.2f} {c / w:9.2f} {m:9.0f} {ratio:>16}")
            print("\n".join(lines[-(len(engines) + 2):]), flush=True)
        if args.data4:
            lines.append("\nmemory: sluice peak RSS at 1x and 4x data")
            for job in ("csv_to_parquet", "groupby_big"):
                peaks = []
                for data in (args.data, args.data4):
                    out = os.path.join(work, f"mem-{job}")
                    shutil.rmtree(out, ignore_errors=True)
                    if os.path.isfile(out):
                        os.remove(out)
                    peaks.append(measure(commands("sluice", job, data, out, args.sluice)))
                lines.append(f"  {job:15} 1x: {peaks[0][2]:6.0f} MiB ({peaks[0][0]:.1f} s)   "
                             f"4x: {peaks[1][2]:6.0f} MiB ({peaks[1][0]:.1f} s)")
                results[f"memory_{job}"] = {"1x_mib": peaks[0][2], "4x_mib": peaks[1][2]}
            print("\n".join(lines[-3:]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
