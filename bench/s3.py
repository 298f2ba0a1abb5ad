#!/usr/bin/env python3
"""Object-storage benchmark: ingest the bench data from a loopback S3 server (moto) vs the
same files from local disk, side by side, interleaved rounds; prints both medians and the
ratio (goal: S3 within 1.5x of local). Also prints what the server itself can serve (parallel
GETs of the same objects with boto3, 8 threads), since moto, a Python server, is the likely
bottleneck on loopback.

Usage: python3 bench/s3.py --sluice PATH --data bench/data/1x/many [--rounds 3]
Needs moto[server] and boto3 (pip install "moto[server]").
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import boto3

    port = free_port()
    server = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                   AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                          aws_secret_access_key="bench-secret", region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        files = sorted(f for f in os.listdir(args.data) if not f.startswith((".", "_")))
        total = sum(os.path.getsize(os.path.join(args.data, f)) for f in files)
        t0 = time.perf_counter()
        for f in files:
            s3.upload_file(os.path.join(args.data, f), "bench", f"data/{f}")
        print(f"uploaded {len(files)} files, {total / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f}s")

        def get(f):
            return len(s3.get_object(Bucket="bench", Key=f"data/{f}")["Body"].read())

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            got = sum(pool.map(get, files))
        secs = time.perf_counter() - t0
        print(f"server capacity: {got / 2**20 / secs:.0f} MiB/s (boto3, 8 parallel GETs of whole objects)")

        with tempfile.TemporaryDirectory(prefix="sluice-s3-bench-") as work:
            def run(src, out):
                t = time.perf_counter()
                subprocess.run([args.sluice, "ingest", src, "--to", os.path.join(work, out),
                                "--mode", "overwrite", "-q"], check=True, env=env)
                return time.perf_counter() - t

            local, remote = [], []
            for _ in range(args.rounds):
                local.append(run(args.data, "local"))
                remote.append(run("s3://bench/data/", "remote"))
            # Same rows either way.
            q = "SELECT count(*) AS n, sum(amount) AS s FROM t"
            a = subprocess.run([args.sluice, "query", q, "-t", f"t={work}/local", "--output", "csv"],
                               capture_output=True, text=True, check=True).stdout
            b = subprocess.run([args.sluice, "query", q, "-t", f"t={work}/remote", "--output", "csv"],
                               capture_output=True, text=True, check=True).stdout
            if a != b:
                sys.exit(f"results differ:\n{a}\n{b}")
        lm, rm = statistics.median(local), statistics.median(remote)
        print(f"local disk  {lm:6.2f}s  ({', '.join(f'{x:.2f}' for x in local)})")
        print(f"s3 (moto)   {rm:6.2f}s  ({', '.join(f'{x:.2f}' for x in remote)})")
        print(f"s3 / local  {rm / lm:6.2f}x  (goal <= 1.5x); same rows: yes")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
