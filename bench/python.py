#!/usr/bin/env python3
"""The Python package beside the Python readers people use, on the same generated data.

1. Read the 32 CSV files of bench/data/1x/many (4.8M rows) into one pyarrow.Table:
   sluice.read, pyarrow.csv.read_csv over the files (concatenated), polars.read_csv over the
   glob (then .to_arrow()) and duckdb.read_csv(...).to_arrow_table(). Every engine's row
   count and amount sum are checked equal.
2. A map_batches identity function over the same rows (read -> Python function -> Parquet)
   against the same pipeline without it: the cost of crossing into Python per batch.

Each run is a fresh interpreter (imports included, as a script would pay them), engines
interleaved in a shuffled order each round; medians are printed with the ratio to the
fastest peer.

usage: python bench/python.py --data bench/data/1x [--rounds 5]
(bench/python.sh builds the release module into bench/.venv and generates the data.)
"""

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

READ = {
    "sluice": "import sluice\nt = sluice.read({files!r})",
    "pyarrow": (
        "import pyarrow as pa, pyarrow.csv as pc, glob\n"
        "t = pa.concat_tables([pc.read_csv(f) for f in sorted(glob.glob({glob!r}))])"
    ),
    "polars": "import polars as pl\nt = pl.read_csv({glob!r}).to_arrow()",
    "duckdb": "import duckdb\nt = duckdb.read_csv({glob!r}).to_arrow_table()",
}
CHECK = (
    "\nimport pyarrow.compute as pc2, json\n"
    "print(json.dumps([t.num_rows, pc2.sum(t.column('amount')).as_py()]))\n"
)

MAP = {
    "with": (
        "import sluice\n"
        "r = sluice.Pipeline().read({files!r}).map_batches(lambda b: b, name='identity')"
        ".write({out!r}, mode='overwrite').run(progress=False)\n"
        "print(r.rows_out)"
    ),
    "without": (
        "import sluice\n"
        "r = sluice.Pipeline().read({files!r}).write({out!r}, mode='overwrite').run(progress=False)\n"
        "print(r.rows_out)"
    ),
}


def timed(code):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.monotonic() - start, out.stdout.strip().splitlines()[-1]


def interleave(codes, rounds):
    times = {k: [] for k in codes}
    answers = {}
    for _ in range(rounds):
        order = list(codes)
        random.shuffle(order)
        for k in order:
            secs, answer = timed(codes[k])
            times[k].append(secs)
            answers.setdefault(k, answer)
    return {k: statistics.median(v) for k, v in times.items()}, answers, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    files = f"{args.data}/many"
    glob = f"{files}/*.csv"
    codes = {k: v.format(files=files, glob=glob) + CHECK for k, v in READ.items()}
    medians, answers, times = interleave(codes, args.rounds)
    got = {k: json.loads(v) for k, v in answers.items()}
    rows, total = got["sluice"]
    for k, (n, t) in got.items():
        # Rows exactly; the float sum to 1e-9 of itself (engines add in their own order).
        assert n == rows and abs(t - total) <= 1e-9 * abs(total), f"engines disagree: {got}"
    import glob as globbing
    count = len(globbing.glob(glob))
    print(f"{count} CSV files -> pyarrow.Table ({rows} rows), "
          f"median of {args.rounds} interleaved runs, fresh interpreter each")
    fastest_peer = min(v for k, v in medians.items() if k != "sluice")
    for k, v in sorted(medians.items(), key=lambda kv: kv[1]):
        spread = f"{min(times[k]):.2f}-{max(times[k]):.2f}"
        print(f"  {k:8} {v:6.2f} s  ({spread})  x{v / fastest_peer:.2f} of the fastest peer")
    tmp = tempfile.mkdtemp(prefix="sluice-bench-py-")
    try:
        codes = {k: v.format(files=files, out=f"{tmp}/{k}") for k, v in MAP.items()}
        medians, answers, times = interleave(codes, args.rounds)
        assert answers["with"] == answers["without"], answers
        overhead = medians["with"] / medians["without"] - 1
        print(f"read -> Parquet ({answers['with']} rows), with and without an identity "
              f"map_batches (Python) stage:")
        for k in ("without", "with"):
            print(f"  {k:8} {medians[k]:6.2f} s  ({min(times[k]):.2f}-{max(times[k]):.2f})")
        print(f"  overhead of the Python stage: {overhead * 100:+.1f}%")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
