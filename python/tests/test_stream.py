"""to_batches streams: a file far bigger than a batch goes through in many batches, every
row once, in bounded memory (measured against reading the same file whole)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa

import sluice
from conftest import write_csv


def test_batches_cover_every_row_once(tmp_path: Path):
    g = write_csv(tmp_path / "in", files=2, rows=30000)
    reader = sluice.scan(tmp_path / "in").to_batches()
    assert isinstance(reader, pa.RecordBatchReader)
    batches = list(reader)
    assert len(batches) > 2
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert len(ids) == g.rows
    assert sorted(ids) == list(range(g.rows))


def peak_mib(code: str) -> dict:
    script = textwrap.dedent(
        """
        import json, sluice
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        def rss():
            return status("VmHWM")
        # Forget the peak of the imports: from here VmHWM is this code's peak.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        """
    ) + textwrap.dedent(code) + "\nprint(json.dumps({'base': base, 'peak': rss(), 'rows': rows}))\n"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_big(path: Path, rows: int) -> None:
    with open(path, "w") as f:
        f.write("id,key,text,amount\n")
        for i in range(rows):
            f.write(f"{i},{i % 977},some text that is not short {i},{i % 1000}.25\n")


def test_streaming_memory_is_bounded(tmp_path: Path):
    # The same rows, 5x more of them: streaming holds a few batches whatever the size (its
    # peak stays put), a whole table grows with the data (which shows the peak is seen).
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_big(small, 300_000)
    write_big(large, 1_500_000)
    peaks = {}
    for path, rows in [(small, 300_000), (large, 1_500_000)]:
        streamed = peak_mib(
            f"""
            rows = 0
            for batch in sluice.scan({str(path)!r}).to_batches():
                rows += batch.num_rows
            """
        )
        whole = peak_mib(
            f"""
            t = sluice.scan({str(path)!r}).to_arrow()
            rows = t.num_rows
            """
        )
        assert streamed["rows"] == whole["rows"] == rows
        peaks[path.name] = (streamed["peak"] - streamed["base"], whole["peak"] - whole["base"])
    print(f"peak growth (streamed, whole) in MiB: {peaks}")
    size_mib = (large.stat().st_size - small.stat().st_size) / 2**20
    streamed_more = peaks["large.csv"][0] - peaks["small.csv"][0]
    whole_more = peaks["large.csv"][1] - peaks["small.csv"][1]
    assert whole_more > 0.5 * size_mib, peaks
    assert streamed_more < 0.25 * size_mib, peaks
