#!/usr/bin/env python3
"""sluice on a loopback Apache DataFusion Ballista cluster (one scheduler, two executors of
the built binary) beside the same jobs run locally, in turns (local, cluster, local,
cluster...), medians reported:

- overhead per job: a 10-row job, cluster minus local;
- overhead per task: 64 small files read with 2 and with 32 partitions on the cluster: the
  extra time over the extra tasks (tasks counted by the scheduler's REST API);
- the main bench job (bench/run.py's `ingest`: the 1x data set to Parquet): local vs
  cluster;
- the enrich stage's load on the API (the enrich bench's job: 100,000 rows over 10,000
  keys, concurrency 64, 20 ms latency): requests and the most in flight at once, counted by
  the API server itself, local vs cluster.

On 2 cores the cluster is slower: the figures to keep small are the overheads.

    python3 bench/cluster.py --sluice BIN --apiserver BIN --data bench/data/1x
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import enrich as enrich_bench  # noqa: E402  (the enrich bench's data and API helpers)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


class Cluster:
    """One scheduler and two executors of `sluice`, on loopback ports."""

    def __init__(self, sluice, work, slots):
        self.port = free_port()
        self.procs = []
        logs = os.path.join(work, "logs")
        os.makedirs(logs, exist_ok=True)

        def spawn(args, name):
            log = open(os.path.join(logs, name), "w")
            self.procs.append(subprocess.Popen([sluice, "cluster"] + args,
                                               stdout=subprocess.DEVNULL, stderr=log))

        spawn(["scheduler", "--bind", f"127.0.0.1:{self.port}"], "scheduler.log")
        for i in range(2):
            spawn(["executor", "--scheduler", f"df://127.0.0.1:{self.port}",
                   "--bind", f"127.0.0.1:{free_port()}", "--grpc-port", str(free_port()),
                   "--slots", str(slots), "--work-dir", os.path.join(work, f"shuffle-{i}")],
                  f"executor-{i}.log")
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if len(get_json(self.api("/api/executors"))) >= 2:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit("the executors did not register in 60 s")

    def api(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def url(self):
        return f"df://127.0.0.1:{self.port}"

    def jobs(self):
        return get_json(self.api("/api/jobs"))

    def tasks_of_last_job(self):
        """Tasks the scheduler ran for the newest job (every stage's partitions)."""
        jobs = self.jobs()
        if not jobs:
            return 0
        job = max(jobs, key=lambda j: j.get("start_time", j.get("queued_at", 0)) or 0)
        stages = get_json(self.api(f"/api/job/{job['job_id']}/stages"))
        stages = stages.get("stages", stages) if isinstance(stages, dict) else stages
        total = 0
        for s in stages:
            n = s.get("partitions")
            if n is None:
                n = len(s.get("tasks", [])) or s.get("num_tasks", 0)
            total += int(n)
        return total

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def run(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def pipeline(path, source, out, threads, extra=""):
    with open(path, "w") as f:
        f.write(f'[source]\npaths = "{source}"\n{extra}[sink]\npath = "{out}"\nmode = "overwrite"\n'
                f"[settings]\nthreads = {threads}\n")
    return path


def turns(rounds, local, remote):
    """Runs `local` and `remote` in turns; their medians."""
    a, b = [], []
    for _ in range(rounds):
        a.append(local())
        b.append(remote())
    return statistics.median(a), statistics.median(b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sluice", required=True)
    p.add_argument("--apiserver", required=True)
    p.add_argument("--data", required=True, help="the 1x data set of bench/run.sh")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--slots", type=int, default=2, help="slots per executor")
    args = p.parse_args()
    sluice = os.path.abspath(args.sluice)
    work = tempfile.mkdtemp(prefix="sluice-cluster-bench-")
    cluster = Cluster(sluice, work, args.slots)
    try:
        print(f"cluster: 1 scheduler, 2 executors x {args.slots} slots, on loopback; "
              f"{args.rounds} rounds, medians, local and cluster in turns")

        # Overhead per job: ten rows.
        tiny = os.path.join(work, "tiny")
        os.makedirs(tiny)
        with open(os.path.join(tiny, "t.csv"), "w") as f:
            f.write("id,v\n" + "".join(f"{i},{i * 3}\n" for i in range(10)))
        job = pipeline(os.path.join(work, "tiny.toml"), tiny, os.path.join(work, "out-tiny"), 2)
        local, remote = turns(args.rounds,
                              lambda: run([sluice, "run", job, "--quiet"]),
                              lambda: run([sluice, "run", job, "--quiet", "--cluster", cluster.url]))
        print(f"per job   10 rows: local {local:.3f} s, cluster {remote:.3f} s "
              f"-> overhead {remote - local:.3f} s per job (goal < 1 s)")

        # Overhead per task: 64 small files, 2 vs 32 partitions.
        small = os.path.join(work, "small")
        os.makedirs(small)
        for i in range(64):
            with open(os.path.join(small, f"s{i:02}.csv"), "w") as f:
                f.write("id,v\n" + "".join(f"{j},{j % 7}\n" for j in range(200)))
        few = pipeline(os.path.join(work, "few.toml"), small, os.path.join(work, "out-few"), 2)
        many = pipeline(os.path.join(work, "many.toml"), small, os.path.join(work, "out-many"), 32)
        t_few, tasks_few, t_many, tasks_many = [], [], [], []
        for _ in range(args.rounds):
            t_few.append(run([sluice, "run", few, "--quiet", "--cluster", cluster.url]))
            tasks_few.append(cluster.tasks_of_last_job())
            t_many.append(run([sluice, "run", many, "--quiet", "--cluster", cluster.url]))
            tasks_many.append(cluster.tasks_of_last_job())
        few_s, many_s = statistics.median(t_few), statistics.median(t_many)
        extra = max(tasks_many) - max(tasks_few)
        per_task = (many_s - few_s) / extra if extra > 0 else float("nan")
        print(f"per task  64 files: {max(tasks_few)} tasks {few_s:.3f} s, {max(tasks_many)} tasks "
              f"{many_s:.3f} s -> {per_task * 1000:.1f} ms per task (goal < 20 ms; "
              f"{2 * args.slots} slots run side by side)")

        # The main bench job: the 1x data set to Parquet.
        data = os.path.abspath(args.data)
        main_job = pipeline(os.path.join(work, "main.toml"), data, os.path.join(work, "out-main"), 4)
        local, remote = turns(args.rounds,
                              lambda: run([sluice, "run", main_job, "--quiet"]),
                              lambda: run([sluice, "run", main_job, "--quiet", "--cluster", cluster.url]))
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(data) for f in fs)
        print(f"main job  ingest {size / 1e6:.0f} MB of CSV to Parquet: local {local:.2f} s, "
              f"cluster {remote:.2f} s ({remote / local:.2f}x)")

        # The enrich job's load on the API.
        server, base = enrich_bench.start_server(args.apiserver, 20)
        try:
            rows_csv = os.path.join(work, "enrich.csv")
            enrich_bench.make_data(rows_csv, 100_000, 10_000)
            loads = {}
            for where, extra in (("local", []), ("cluster", ["--cluster", cluster.url])):
                ework = os.path.join(work, f"enrich-{where}")
                os.makedirs(ework)
                etoml = os.path.join(ework, "p.toml")
                with open(etoml, "w") as f:
                    f.write(f'[source]\npaths = "{rows_csv}"\n[[enrich]]\nname = "meta"\n'
                            f'url = "{base}/meta/{{record_id}}"\nconcurrency = 64\ntimeout = "10s"\n'
                            f'retries = 5\n[enrich.extract]\ntitle = "/title"\n'
                            f'[sink]\npath = "{ework}/out"\nmode = "overwrite"\n[settings]\nthreads = 4\n')
                enrich_bench.server_stats(base)  # a fresh count for this run
                secs = run([sluice, "run", etoml, "--quiet", "--report-json",
                            os.path.join(ework, "r.json")] + extra)
                stats = enrich_bench.server_stats(base)
                loads[where] = (secs, stats["requests"], stats["max_in_flight"])
            for where, (secs, requests, peak) in loads.items():
                print(f"enrich    {where:7}: {requests} requests for 10000 keys, at most {peak} in "
                      f"flight (concurrency 64), {secs:.2f} s")
        finally:
            server.kill()
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
