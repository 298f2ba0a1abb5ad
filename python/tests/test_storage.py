"""storage_options reach the object stores: a real S3-compatible server (moto) on
127.0.0.1, objects put with plain HTTP, read and written by sluice from Python."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import sluice
from conftest import write_csv


@pytest.fixture
def moto():
    exe = shutil.which("moto_server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("moto_server is not installed (.ci/run installs it)")
        pytest.skip("moto_server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def put(url: str, body: bytes = b"") -> None:
    # Bytes, not a form (moto would read a form-encoded body as fields).
    req = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=10).read()


def test_read_and_write_s3_with_storage_options(moto: str, tmp_path: Path):
    g = write_csv(tmp_path / "local", files=3, rows=100)
    put(f"{moto}/raw")
    for f in g.files:
        # Keys with spaces, '#' and unicode, percent-encoded on the wire.
        key = urllib.request.quote(f"in/{f.name}")
        put(f"{moto}/raw/{key}", f.read_bytes())
    options = {
        "endpoint": moto,
        "allow_http": True,
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    t = sluice.read("s3://raw/in/", storage_options=options)
    assert t.num_rows == g.rows
    assert sum(t.column("amount").to_pylist()) == g.amount
    report = (
        sluice.Pipeline()
        .read("s3://raw/in/*.csv", storage_options=options)
        .sql("SELECT country, sum(amount) AS total FROM source GROUP BY country")
        .write("s3://raw/out", format="parquet")
        .run()
    )
    assert report.rows_in == g.rows
    back = sluice.read("s3://raw/out/", storage_options=options)
    assert sorted(back.column("country").to_pylist()) == sorted(g.countries)
    assert sum(back.column("total").to_pylist()) == g.amount
    with pytest.raises(sluice.InputError):
        sluice.read("s3://raw/nothing-here/*.csv", storage_options=options)
