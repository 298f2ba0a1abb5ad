#!/usr/bin/env python3
"""Enrich benchmark: 100k rows with 10k distinct ids against a loopback API with 20 ms latency.

Runs, side by side in one session:
  * sluice (`sluice run` with an [[enrich]] stage, concurrency 64, no cache),
  * Python's common recipe: ThreadPoolExecutor(10) + requests.get per row,
  * asyncio + aiohttp with a semaphore of 64, one request per row,
and prints each time next to the floor distinct_keys x latency / concurrency. On the clean
API, each sluice round follows a round of `apiserver --probe`: raw keep-alive connections
asking the same keys and doing nothing else, the floor this server reaches on this machine;
and a round of `apiserver --probe --reqwest`: the same loop through reqwest, the HTTP client
sluice is built on. The server also says each client's mean think time per request.
Every run must return the enriched value for every row (checked), or the run counts as
failed.

With --faults the API behaves like real ones (apiserver --faults, the same keys every run:
2% of keys answer 500 and 1% answer 429 with Retry-After: 1 on their first call, 0.1% are
always 404). The floor then adds one Retry-After; every row must be enriched or, for the 404
keys, rejected; sluice must make exactly distinct keys + retries calls and retry no key before
its Retry-After (the server counts). The Python side is asyncio + aiohttp with a dedupe of
keys and a per-request retry that waits out Retry-After: the best plain recipe.

Usage: bench/enrich.py --sluice PATH --apiserver PATH [--rows 100000] [--keys 10000]
       [--latency-ms 20] [--jitter-ms 0] [--rounds 3] [--skip-python] [--skip-per-row]
       [--faults]
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
import urllib.request
from concurrent.futures import ThreadPoolExecutor

# apiserver --faults defaults (sluice_testkit::Faults).
FAULTS = {"seed": 7, "error_500": 0.02, "too_many": 0.01, "missing": 0.001, "retry_after": 1}
MASK = (1 << 64) - 1


def fate(key, f=FAULTS):
    """What key does on apiserver --faults: the same draw as sluice_testkit::Faults::fate."""
    h = 0xCBF29CE484222325 ^ f["seed"]
    for b in key.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    h ^= h >> 31
    u = (h >> 11) / float(1 << 53)
    if u < f["missing"]:
        return "missing"
    if u < f["missing"] + f["too_many"]:
        return "429"
    if u < f["missing"] + f["too_many"] + f["error_500"]:
        return "500"
    return "ok"


def server_stats(base):
    """Early retries, and when the first and last request since the last call arrived."""
    with urllib.request.urlopen(f"{base}/_stats") as r:
        return json.load(r)


def start_server(binary, latency_ms, faults=False, jitter_ms=0):
    proc = subprocess.Popen(
        [binary, "--latency-ms", str(latency_ms)] + (["--faults"] if faults else [])
        + (["--jitter-ms", str(jitter_ms)] if jitter_ms else []),
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


def probe(binary, base, keys, concurrency, client=None):
    """Seconds the fastest client there is takes for the same keys (`apiserver --probe`), and
    its mean think time by the server's clock; with client="reqwest", the same loop through
    reqwest (the HTTP library sluice calls with) instead of raw connections."""
    server_stats(base)  # a fresh span for this run
    out = subprocess.run([binary, "--probe", base, "--keys", str(keys),
                          "--concurrency", str(concurrency)]
                         + (["--reqwest"] if client == "reqwest" else []),
                         capture_output=True, text=True, check=True)
    gap = server_stats(base).get("client_gap_us", 0.0)
    return float(out.stdout.split(",")[-1].split()[0]), gap


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


def run_sluice(sluice, data, base, work, concurrency, expect_rejected=0):
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
    server_stats(base)  # a fresh span for this run
    t0, wall0 = time.perf_counter(), time.time()
    subprocess.run([sluice, "run", pipeline, "--report-json", report, "--quiet"], check=True)
    secs = time.perf_counter() - t0
    wall1 = time.time()
    span = server_stats(base)
    with open(report) as f:
        r = json.load(f)
    e = r["enrich"][0]
    ok = (r["rows_out"] + r["rows_rejected"] == r["rows_in"]
          and r["rows_rejected"] == expect_rejected
          and e["calls"] == e["distinct_keys"] + e["retries"])
    # Check values: every title matches its id.
    q = subprocess.run(
        [sluice, "query", "SELECT count(*) AS bad FROM t WHERE title <> concat('title-', record_id) OR title IS NULL",
         "-t", f"t={out}", "--output", "csv"],
        capture_output=True, text=True, check=True,
    )
    ok = ok and q.stdout.strip().splitlines()[-1] == "0"
    # Where the wall time went, by the server's clock: before the first request (start-up,
    # planning, the first batch), from the first request to the last, and after it (the
    # last answer, the output's last rows, the commit).
    e["early_retries"] = span["early_retries"]
    e["client_gap_us"] = span.get("client_gap_us", 0.0)
    e["timeline"] = (span["first_request"] - wall0, span["last_request"] - span["first_request"],
                     wall1 - span["last_request"])
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


def python_aiohttp_retry(data, base, concurrency, missing_rows):
    """asyncio + aiohttp, one request per distinct key (dedupe), a semaphore, and a
    per-request retry: 429 waits out its Retry-After (outside the semaphore), 5xx backs off
    briefly, 404 is a miss. The best plain-Python recipe against a faulty API."""
    import aiohttp

    rows = read_rows(data)
    keys = sorted({rid for rid, _ in rows})

    async def main():
        sem = asyncio.Semaphore(concurrency)
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def fetch(rid):
                for attempt in range(6):
                    async with sem:
                        async with session.get(f"{base}/meta/{rid}") as resp:
                            if resp.status == 200:
                                return rid, await resp.json()
                            if resp.status == 404:
                                return rid, None
                            wait = resp.headers.get("Retry-After")
                    await asyncio.sleep(float(wait) if wait else 0.05 * 2 ** attempt)
                return rid, None

            return dict(await asyncio.gather(*(fetch(k) for k in keys)))

    t0 = time.perf_counter()
    answers = asyncio.run(main())
    out = [(rid, n, answers[rid]) for rid, n in rows]
    secs = time.perf_counter() - t0
    lost = sum(1 for _, _, j in out if j is None)
    ok = lost == missing_rows and all(j["title"] == f"title-{rid}" for rid, _, j in out if j)
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
    ap.add_argument("--faults", action="store_true")
    ap.add_argument("--jitter-ms", type=int, default=0,
                    help="clean API only: each answer after latency +- this, drawn evenly")
    ap.add_argument("--skip-per-row", action="store_true",
                    help="skip the two recipes that call once per row (minutes)")
    args = ap.parse_args()

    print(capacity(args.apiserver))
    if args.jitter_ms and args.faults:
        sys.exit("--jitter-ms is for the clean API")
    server, base = start_server(args.apiserver, args.latency_ms, args.faults, args.jitter_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-enrich-bench-") as work:
            data = os.path.join(work, "data.csv")
            make_data(data, args.rows, args.keys)
            floor = args.keys * args.latency_ms / 1000 / args.concurrency
            missing_rows = 0
            if args.faults:
                floor += FAULTS["retry_after"]
                missing_rows = sum(1 for rid, _ in read_rows(data) if fate(rid) == "missing")
            jitter = f" +- {args.jitter_ms}" if args.jitter_ms else ""
            print(f"{args.rows} rows, {args.keys} distinct ids, {args.latency_ms}{jitter} ms latency, "
                  f"concurrency {args.concurrency}{', faults' if args.faults else ''}: "
                  f"floor {floor:.2f}s")
            times = []
            gaps = []
            probes = []
            reqwest_probes = []
            last = None
            for _ in range(args.rounds):
                if not args.faults:
                    # In turns with sluice: raw keep-alive connections asking the same keys
                    # and doing nothing else, the floor of this server on this machine; then
                    # the same loop through reqwest, the HTTP client sluice is built on.
                    probes.append(probe(args.apiserver, base, args.keys, args.concurrency))
                    reqwest_probes.append(probe(args.apiserver, base, args.keys,
                                                args.concurrency, "reqwest"))
                if args.faults:
                    # Faults strike a key's first call: a fresh server per run.
                    server.kill()
                    server, base = start_server(args.apiserver, args.latency_ms, True)
                secs, ok, e = run_sluice(args.sluice, data, base, work, args.concurrency,
                                         missing_rows)
                if not ok:
                    sys.exit("sluice returned wrong or missing rows, or made extra calls")
                if args.faults and e["early_retries"] != 0:
                    sys.exit("sluice retried a key before its Retry-After")
                times.append(secs)
                gaps.append(e["client_gap_us"])
                last = e
            s = statistics.median(times)
            print(f"sluice            {s:7.2f}s  (median of {args.rounds}: "
                  f"{', '.join(f'{t:.2f}' for t in times)})  = {s / floor:.2f}x floor; "
                  f"calls {last['calls']}, p50 {last['latency_ms_p50']:.1f} ms, "
                  f"{last['requests_per_second']:.0f} req/s, max in flight {last['max_in_flight']}")
            if probes:
                p = statistics.median(t for t, _ in probes)
                print(f"raw client        {p:7.2f}s  (median of {args.rounds}: "
                      f"{', '.join(f'{t:.2f}' for t, _ in probes)})  = {p / floor:.2f}x floor; "
                      f"sluice = {s / p:.2f}x of it (apiserver --probe: {args.concurrency} "
                      f"keep-alive connections of raw HTTP, nothing else)")
                r = statistics.median(t for t, _ in reqwest_probes)
                print(f"reqwest client    {r:7.2f}s  (median of {args.rounds}: "
                      f"{', '.join(f'{t:.2f}' for t, _ in reqwest_probes)})  = {r / floor:.2f}x "
                      f"floor; sluice = {s / r:.2f}x of it (apiserver --probe --reqwest: the "
                      f"same loop through reqwest)")
                # Think time: from an answer leaving the server to the next request on that
                # connection arriving. The latency is the same for every request, so the 64
                # connections move in waves: each wave's answers arrive together and wait for
                # the client to get through all of them, so CPU per answer costs wall time.
                print(f"  client think time per request (server's clock, medians): sluice "
                      f"{statistics.median(gaps):.0f} us, reqwest "
                      f"{statistics.median(g for _, g in reqwest_probes):.0f} us, raw "
                      f"{statistics.median(g for _, g in probes):.0f} us")
            t = last["timeline"]
            ideal = (args.keys / args.concurrency - 1) * args.latency_ms / 1000
            print(f"  last run by the server's clock: {t[0]:.3f}s to the first request, "
                  f"{t[1]:.3f}s to the last" + ("" if args.faults else f" (ideal {ideal:.3f}s)")
                  + f", {t[2]:.3f}s after it")
            results = {"floor": floor, "sluice": s, "sluice_rounds": times}
            if probes:
                results["raw_client"] = statistics.median(t for t, _ in probes)
                results["reqwest_client"] = statistics.median(t for t, _ in reqwest_probes)
            if args.faults and "waited_s" in last:
                w = last["waited_s"]
                print(f"  sluice waited (request-seconds): Retry-After {w['retry_after']:.1f}, "
                      f"backoff {w['backoff']:.1f}, concurrency {w['concurrency']:.1f}, "
                      f"paused {w['paused']:.1f}; {last['paused_all']} stage pauses, "
                      f"{last['retries']} retries")
            if not args.skip_python and args.faults:
                server.kill()
                server, base = start_server(args.apiserver, args.latency_ms, True)
                secs, ok = python_aiohttp_retry(data, base, args.concurrency, missing_rows)
                print(f"aiohttp+dedupe+RA {secs:7.2f}s  ok={ok}  = {secs / s:.2f}x sluice, "
                      f"{secs / floor:.2f}x floor")
                results["aiohttp_retry"] = secs
            elif not args.skip_python:
                secs, ok = python_aiohttp_retry(data, base, args.concurrency, 0)
                print(f"aiohttp+dedupe    {secs:7.2f}s  ok={ok}  = {secs / s:.2f}x sluice, "
                      f"{secs / floor:.2f}x floor (timed after reading the rows)")
                results["aiohttp_dedupe"] = secs
            if not args.skip_python and not args.faults and not args.skip_per_row:
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
