"""sluice.run and sluice.Pipeline: pipelines with a lookup, an enrich stage against a
loopback API and a Python function; reports equal to the CLI's; exceptions and Ctrl-C
commit nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import sluice
from conftest import require, write_csv


def countries(path: Path) -> dict:
    names = {"DE": "Germany", "FR": "France", "US": "United States", "JP": "Japan", "BR": "Brazil"}
    path.write_text("code,name\n" + "".join(f"{k},{v}\n" for k, v in names.items()))
    return names


def add_double(batch: pa.RecordBatch) -> pa.RecordBatch:
    doubled = pc.multiply(batch.column("amount"), 2)
    return pa.RecordBatch.from_arrays(
        list(batch.columns) + [doubled], names=list(batch.schema.names) + ["double"]
    )


def test_pipeline_with_lookup_enrich_and_a_python_function(tmp_path: Path, api):
    data = tmp_path / "in put #1"
    g = write_csv(data, files=3, rows=200)
    names = countries(tmp_path / "countries.csv")
    out = tmp_path / "out ü"
    calls = []

    def tag(batch: pa.RecordBatch) -> pa.RecordBatch:
        calls.append(batch.num_rows)
        return add_double(batch)

    report = (
        sluice.Pipeline()
        .read(data)
        .lookup("c", tmp_path / "countries.csv", on={"left": "country", "right": "code"}, columns=["name"], prefix="country_")
        .enrich("item", f"{api.url}/item/{{key}}", concurrency=4, extract={"score": {"path": "/score", "type": "bigint"}, "label": "/label"})
        .sql("SELECT id, key, country, country_name, amount, score, label FROM source WHERE amount <> 0")
        .map_batches(tag)
        .write(out, partition_by="country")
        .run(progress=False)
    )
    t = pq.read_table(out).to_pylist()
    zero = g.rows - sum(1 for r in t)  # rows the WHERE removed
    assert report.rows_in == g.rows
    assert report.rows_out == len(t)
    assert report.rows_removed_by_sql == zero
    assert report.rows_rejected == 0
    assert all(r["score"] == 2 * r["key"] for r in t)
    assert all(r["label"] == f"k-{r['key']}" for r in t)
    assert all(r["double"] == 2 * r["amount"] for r in t)
    assert all(r["country_name"] == names[str(r["country"])] for r in t)
    assert sum(r["amount"] for r in t) == g.amount
    # One call per distinct key, at most `concurrency` in flight.
    assert sorted(api.calls) == sorted(str(k) for k in g.keys)
    assert all(n == 1 for n in api.calls.values())
    assert api.peak <= 4
    # The function ran (once on an empty batch to learn its columns, then on the data).
    assert calls[0] == 0 and sum(calls) == len(t)


def test_report_equals_the_clis(tmp_path: Path, sluice_bin: str):
    data = tmp_path / "data"
    g = write_csv(data, files=2, rows=150, bad_every=30)
    text = textwrap.dedent(
        f"""
        [source]
        paths = [{json.dumps(str(data))}]

        [[transform]]
        sql = "SELECT country, amount FROM source WHERE amount > 0"

        [sink]
        path = "OUT"
        format = "parquet"
        """
    )
    (tmp_path / "p.toml").write_text(text.replace("OUT", "out-py"))
    (tmp_path / "cli.toml").write_text(text.replace("OUT", "out-cli"))
    report = sluice.run(tmp_path / "p.toml")
    subprocess.run(
        [sluice_bin, "run", str(tmp_path / "cli.toml"), "--report-json", str(tmp_path / "r.json"), "-q"],
        check=True,
    )
    cli = json.loads((tmp_path / "r.json").read_text())
    ours = report.to_dict()
    assert sorted(ours) == sorted(cli)
    for k in ["rows_in", "rows_out", "rows_rejected", "rows_removed_by_sql", "files_read", "bytes_read"]:
        assert ours[k] == cli[k], k
    assert report.rows_in == g.rows + 10  # 10 bad rows: framed records count
    assert report.rows_rejected == 10
    assert report.rows_out == g.positive
    assert report.rows_in == report.rows_out + report.rows_rejected + report.rows_removed_by_sql
    assert Path(report.rejects_path).exists()


def test_run_a_dict(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    g = write_csv(data, files=1, rows=80)
    monkeypatch.chdir(tmp_path)
    report = sluice.run(
        {
            "source": {"paths": "data/*.csv"},
            "transform": [{"sql": "SELECT key, count(*) AS n FROM source GROUP BY key", "name": "k"}],
            "sink": {"path": "out", "format": "csv", "mode": "overwrite"},
            "settings": {"threads": 2},
        },
        progress=False,
    )
    assert report.rows_in == g.rows
    assert report.rows_out == len(g.keys)
    assert (tmp_path / "out" / "_SUCCESS").exists()
    with pytest.raises(sluice.ConfigError, match="bogus"):
        sluice.run({"source": {"paths": "data/*.csv", "bogus": 1}, "sink": {"path": "o"}})


def test_map_batches_takes_pandas_and_tables(tmp_path: Path):
    require("pandas")
    data = tmp_path / "data"
    g = write_csv(data, files=2, rows=100)

    def with_pandas(batch: pa.RecordBatch):
        df = batch.to_pandas()
        df["big"] = df["amount"].abs() > 500
        return df[["id", "big"]]

    schema = pa.schema([("id", pa.int64()), ("big", pa.bool_())])
    report = (
        sluice.Pipeline()
        .read(data)
        .map_batches(with_pandas, schema=schema)
        .map_batches(lambda b: pa.Table.from_batches([b]), name="as_table")
        .write(tmp_path / "out", format="ndjson")
        .run()
    )
    assert report.rows_out == g.rows
    rows = [json.loads(line) for f in sorted((tmp_path / "out").glob("*.ndjson")) for line in f.read_text().splitlines()]
    assert len(rows) == g.rows
    assert sorted(r["id"] for r in rows) == list(range(g.rows))


def test_an_exception_in_the_function_commits_nothing(tmp_path: Path):
    data = tmp_path / "data"
    write_csv(data, files=2, rows=100)
    out = tmp_path / "out"

    def boom(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows > 0 and 42 in batch.column("id").to_pylist():
            raise ValueError("row 42 is cursed")
        return batch

    with pytest.raises(sluice.FunctionError, match="row 42 is cursed") as info:
        sluice.Pipeline().read(data).map_batches(boom).write(out).run()
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    # The traceback reaches into the function.
    tb = cause.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "boom" in frames
    assert not out.exists()


def test_a_bad_return_value_is_a_clear_error(tmp_path: Path):
    data = tmp_path / "data"
    write_csv(data, files=1, rows=10)
    with pytest.raises(sluice.FunctionError, match="returned int"):
        sluice.Pipeline().read(data).map_batches(lambda b: 3, name="three").write(tmp_path / "o").run()
    assert not (tmp_path / "o").exists()


def test_ctrl_c_cancels_promptly_and_commits_nothing(tmp_path: Path):
    data = tmp_path / "data"
    write_csv(data, files=8, rows=5000)
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import signal, sys, time, sluice
        # Python's own Ctrl-C handler, even when started with SIGINT ignored (a background
        # job of a non-interactive shell, as CI may run this).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        def slow(batch):
            if batch.num_rows:
                print("started", flush=True)
                time.sleep(0.5)
            return batch
        try:
            sluice.Pipeline().read({str(data)!r}, split_min_size=4096).threads(2).map_batches(slow).write({str(out)!r}).run()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        print("finished", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    # The job is running (a batch is inside the function): Ctrl-C now.
    assert proc.stdout.readline().strip() == "started"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 3, rest
    assert "interrupted" in rest
    assert took < 5, f"took {took:.1f} s to stop"
    assert not out.exists()


def test_ctrl_c_stops_a_read(tmp_path: Path):
    data = tmp_path / "data"
    write_csv(data, files=2, rows=2000)
    script = textwrap.dedent(
        f"""
        import signal, sys, sluice
        signal.signal(signal.SIGINT, signal.default_int_handler)
        rel = sluice.scan({str(data)!r}).sql(
            "SELECT a.id FROM self a CROSS JOIN self b CROSS JOIN self c"
        )
        print("started", flush=True)
        try:
            rel.to_arrow()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, rest


def test_report_fields_and_read_only(tmp_path: Path):
    data = tmp_path / "data"
    g = write_csv(data, files=2, rows=40)
    r = sluice.Pipeline().read(data).write(tmp_path / "o").run()
    assert r.rows_in == r.rows_out == g.rows
    assert r.files_read == 2 and r.files_written >= 1 and r.bytes_written > 0
    assert r.output.endswith("o")
    assert isinstance(r.to_dict()["files"], list)
    with pytest.raises(AttributeError):
        r.rows_in = 3
    with pytest.raises(AttributeError):
        r.no_such_field
    assert "rows_in=80" in repr(r)


def test_functions_of_one_name_each_run_once(tmp_path: Path):
    data = tmp_path / "data"
    g = write_csv(data, files=1, rows=30)

    def adder(column: str, k: int):
        def add(batch: pa.RecordBatch) -> pa.RecordBatch:
            value = pc.add(batch.column("amount"), k)
            return pa.RecordBatch.from_arrays(list(batch.columns) + [value], names=list(batch.schema.names) + [column])

        return add

    out = tmp_path / "out"
    report = (
        sluice.Pipeline()
        .read(data)
        .map_batches(adder("plus1", 1))
        .map_batches(adder("plus2", 2))
        .map_batches(lambda b: b)
        .map_batches(lambda b: b)
        .write(out)
        .run()
    )
    t = pq.read_table(out)
    assert report.rows_out == g.rows == t.num_rows
    assert sum(t.column("plus1").to_pylist()) == g.amount + g.rows
    assert sum(t.column("plus2").to_pylist()) == g.amount + 2 * g.rows
