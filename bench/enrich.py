#!/usr/bin/env python3
"""Enrich benchmark: 100k rows with 10k distinct ids against a loopback API with 20 ms latency.

Runs, side by side in one session:
  * sluice (`sluice run` with an [[enrich]] stage, concurrency 64, no cache),
  * Python's common recipe: ThreadPoolExecutor(10) + requests.get per row,
  * asyncio + aiohttp with a semaphore of 64, one request per row,
and prints each time next to the floor distinct_keys x latency / concurrency. Every run must
return the enriched value for every row (checked), or the run counts as failed.

Usage: bench/enrich.py --sluice PATH --apiserver PATH [--rows 100000] [--keys 10000]
       [--latency-ms 20] [--rounds 3] [--skip-python]
"""

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


def start_server(binary, latency_ms):
    proc = subprocess.Popen(
        [binary, "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"apiserver did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1]


def capacity(binary):
    out = subprocess.run([binary, "--capacity"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def make_data(path, rows, keys, seed=7):
    rnd = random.Random(seed)
    ids = [f"id{k:05d}" for k in range(keys)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record_id", "n"])
        # every key at least once, then random repeats, shuffled
        col = ids + [rnd.choice(ids) for _ in range(rows - keys)]
        rnd.shuffle(col)
        for i, rid in enumerate(col):
            w.writerow([rid, i])
    return rows


def run_sluice(sluice, data, base, work, concurrency):
    out = os.path.join(work, "out")
    pipeline = os.path.join(work, "p.toml")
    with open(pipeline, "w") as f:
        f.write(
            f"""
[source]
paths = "{data}"

[[enrich]]
name = "meta"
url = "{base}/meta/{{record_id}}"
concurrency = {concurrency}
timeout = "10s"
retries = 5
[enrich.extract]
title = "/title"
owner = "/owner/name"
score = {{ path = "/score", type = "bigint" }}

[sink]
path = "{out}"
mode = "overwrite"
"""
        )
    report = os.path.join(work, "report.json")
    t0 = time.perf_counter()
    subprocess.run([sluice, "run", pipeline, "--report-json", report, "--quiet"], check=True)
    secs = time.perf_counter() - t0
    with open(report) as f:
        r = json.load(f)
    e = r["enrich"][0]
    ok = r["rows_out"] == r["rows_in"] and r["rows_rejected"] == 0
    # Check values: every title matches its id.
    q = subprocess.run(
        [sluice, "query", "SELECT count(*) AS bad FROM t WHERE title <> concat('title-', record_id) OR title IS NULL",
         "-t", f"t={out}", "--output", "csv"],
        capture_output=True, text=True, check=True,
    )
    ok = ok and q.stdout.strip().splitlines()[-1] == "0"
    return secs, ok, e


def read_rows(data):
    with open(data, newline="") as f:
        r = csv.reader(f)
        next(r)
        return [(rid, int(n)) for rid, n in r]


def python_threads(data, base):
    """The common recipe: ThreadPoolExecutor(max_workers=10) + requests.get per record."""
    import requests

    rows = read_rows(data)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=10)
    session.mount("http://", adapter)

    def enrich(row):
        rid, n = row
        resp = session.get(f"{base}/meta/{rid}", timeout=10)
        resp.raise_for_status()
        j = resp.json()
        return (rid, n, j.get("title"), j.get("owner", {}).get("name"), j.get("score"))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=10) as pool:
        out = list(pool.map(enrich, rows))
    secs = time.perf_counter() - t0
    ok = len(out) == len(rows) and all(t == f"title-{rid}" for rid, _, t, _, _ in out)
    return secs, ok


def python_aiohttp(data, base, concurrency):
    """asyncio + aiohttp with a semaphore, one request per record."""
    import aiohttp

    rows = read_rows(data)

    async def main():
        sem = asyncio.Semaphore(concurrency)
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def enrich(row):
                rid, n = row
                async with sem:
                    async with session.get(f"{base}/meta/{rid}") as resp:
                        resp.raise_for_status()
                        j = await resp.json()
                return (rid, n, j.get("title"), j.get("owner", {}).get("name"), j.get("score"))

            return await asyncio.gather(*(enrich(r) for r in rows))

    t0 = time.perf_counter()
    out = asyncio.run(main())
    secs = time.perf_counter() - t0
    ok = len(out) == len(rows) and all(t == f"title-{rid}" for rid, _, t, _, _ in out)
    return secs, ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--apiserver", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-python", action="store_true")
    args = ap.parse_args()

    print(capacity(args.apiserver))
    server, base = start_server(args.apiserver, args.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-enrich-bench-") as work:
            data = os.path.join(work, "data.csv")
            make_data(data, args.rows, args.keys)
            floor = args.keys * args.latency_ms / 1000 / args.concurrency
            print(f"{args.rows} rows, {args.keys} distinct ids, {args.latency_ms} ms latency, "
                  f"concurrency {args.concurrency}: floor {floor:.2f}s")
            times = []
            last = None
            for _ in range(args.rounds):
                secs, ok, e = run_sluice(args.sluice, data, base, work, args.concurrency)
                if not ok:
                    sys.exit("sluice returned wrong or missing rows")
                times.append(secs)
                last = e
            s = statistics.median(times)
            print(f"sluice            {s:7.2f}s  (median of {args.rounds}: "
                  f"{', '.join(f'{t:.2f}' for t in times)})  = {s / floor:.2f}x floor; "
                  f"calls {last['calls']}, p50 {last['latency_ms_p50']:.1f} ms, "
                  f"{last['requests_per_second']:.0f} req/s, max in flight {last['max_in_flight']}")
            results = {"floor": floor, "sluice": s, "sluice_rounds": times}
            if not args.skip_python:
                secs, ok = python_aiohttp(data, base, args.concurrency)
                print(f"asyncio+aiohttp64 {secs:7.2f}s  ok={ok}  = {secs / s:.1f}x sluice")
                results["aiohttp"] = secs
                secs, ok = python_threads(data, base)
                print(f"threads(10)+req   {secs:7.2f}s  ok={ok}  = {secs / s:.1f}x sluice")
                results["threads"] = secs
            print(json.dumps(results))
    finally:
        server.kill()


if __name__ == "__main__":
    main()
