"""Shared parts of the Python package's tests: generated data whose counts the generator
knows, a loopback HTTP API that counts its calls, and the sluice CLI binary for
side-by-side checks."""

from __future__ import annotations

import csv
import http.server
import json
import os
import random
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest

# Paths are data: every generated folder and file name carries these.
ODD = "dir with space %20 #hash ~tilde [br] ü名"


class Generated:
    """Rows written, counted by the generator itself (never by sluice)."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.rows = 0
        self.amount = 0
        self.positive = 0
        self.keys: set[int] = set()
        self.countries: dict[str, int] = {}


def write_csv(folder: Path, files: int, rows: int, seed: int = 7, bad_every: int = 0) -> Generated:
    """`files` CSV files of `rows` good rows each (id, key, country, amount, note); with
    `bad_every`, a row with one field too many after every that many good rows (not counted
    in `rows`)."""
    rnd = random.Random(seed)
    g = Generated()
    folder.mkdir(parents=True, exist_ok=True)
    next_id = 0
    for f in range(files):
        path = folder / f"part {f:02d} #{f} ü.csv"
        with open(path, "w", newline="", encoding="utf-8") as out:
            w = csv.writer(out)
            w.writerow(["id", "key", "country", "amount", "note"])
            for r in range(rows):
                key = rnd.randrange(50)
                country = rnd.choice(["DE", "FR", "US", "JP", "BR"])
                amount = rnd.randrange(-1000, 1000)
                note = rnd.choice(["", "plain", "a, comma", 'a "quote"', "ünïcode", "line\nbreak"])
                w.writerow([next_id, key, country, amount, note])
                next_id += 1
                g.rows += 1
                g.amount += amount
                g.positive += amount > 0
                g.keys.add(key)
                g.countries[country] = g.countries.get(country, 0) + 1
                if bad_every and (r + 1) % bad_every == 0:
                    w.writerow([next_id, key, country, amount, note, "extra"])
        g.files.append(path)
    return g


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    d = tmp_path / ODD
    d.mkdir()
    return d


class Api:
    """A JSON API on 127.0.0.1: GET /item/KEY answers {"key": KEY, "score": 2*KEY,
    "label": "k-KEY"}; it counts calls per key and the most requests in flight."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with api.lock:
                    api.in_flight += 1
                    api.peak = max(api.peak, api.in_flight)
                try:
                    key = unquote(self.path.rsplit("/", 1)[-1])
                    with api.lock:
                        api.calls[key] = api.calls.get(key, 0) + 1
                    if not key.lstrip("-").isdigit():
                        self.send_response(404)
                        self.end_headers()
                        return
                    body = json.dumps({"key": int(key), "score": 2 * int(key), "label": f"k-{key}"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with api.lock:
                        api.in_flight -= 1

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    a = Api()
    yield a
    a.close()


@pytest.fixture(scope="session")
def sluice_bin() -> str:
    """The CLI binary, for side-by-side checks: SLUICE_BIN, or the workspace's debug build."""
    path = os.environ.get("SLUICE_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR") or str(Path(__file__).resolve().parents[2] / "target")
        path = str(Path(target) / "debug" / "sluice")
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the sluice binary is not at {path} (build it, or set SLUICE_BIN)")
        pytest.skip(f"the sluice binary is not at {path}")
    return path


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def require(module: str):
    """The module, or a failure in CI (a missing dependency never passes as a skip there)."""
    if not have(module):
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed (.ci/run installs it)")
        pytest.skip(f"{module} is not installed")
    return __import__(module)


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
