"""sluice.read / sluice.scan: every format into pyarrow, pandas and polars, values and types
checked against the generator's own counts and against DuckDB reading the same files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet as pq
import pytest

import sluice
from conftest import require, write_csv


def test_read_csv_files_with_odd_paths_exactly(odd_dir: Path):
    g = write_csv(odd_dir, files=4, rows=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row may be missing
        table = sluice.read(str(odd_dir))
    assert isinstance(table, pa.Table)
    assert table.num_rows == g.rows
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("amount").type == pa.int64()
    assert table.schema.field("country").type == pa.string()
    assert sum(table.column("amount").to_pylist()) == g.amount
    assert sorted(table.column("id").to_pylist()) == list(range(g.rows))
    notes = set(table.column("note").to_pylist())
    assert {"a, comma", 'a "quote"', "ünïcode", "line\nbreak"} <= notes


def test_read_one_file_a_glob_and_a_list(odd_dir: Path, tmp_path: Path):
    g = write_csv(odd_dir, files=3, rows=50)
    one = sluice.read(g.files[0])  # a pathlib.Path
    assert one.num_rows == 50
    listed = sluice.read([str(g.files[0]), g.files[1]])
    assert listed.num_rows == 100
    # In a glob, [..] is a class: a folder without brackets holds the files globbed.
    plain = tmp_path / "glob %20 #h ~ ü"
    write_csv(plain, files=3, rows=50)
    globbed = sluice.read(str(plain / "part 0[12]*.csv"))
    assert globbed.num_rows == 100


def test_scan_sql_matches_duckdb(odd_dir: Path):
    duckdb = require("duckdb")
    write_csv(odd_dir, files=5, rows=400, seed=11)
    query = (
        "SELECT country, count(*) AS n, sum(amount) AS total, count(DISTINCT key) AS keys "
        "FROM {t} GROUP BY country ORDER BY country"
    )
    ours = sluice.scan(str(odd_dir)).sql(query.format(t="self")).to_arrow().to_pylist()
    files = ", ".join("'" + str(f).replace("'", "''") + "'" for f in sorted(odd_dir.glob("*.csv")))
    theirs = duckdb.sql(query.format(t=f"read_csv([{files}], header=true)")).fetchall()
    assert [(r["country"], r["n"], r["total"], r["keys"]) for r in ours] == [tuple(r) for r in theirs]


def test_sql_steps_chain_and_name_the_table(odd_dir: Path):
    g = write_csv(odd_dir, files=2, rows=100)
    rel = sluice.scan(str(odd_dir))
    positive = rel.sql("SELECT * FROM source WHERE amount > 0")
    counted = positive.sql("SELECT count(*) AS n FROM t", table_name="t")
    assert counted.to_arrow().column("n").to_pylist() == [g.positive]
    # The parent relation still runs after a child was made from it (and again).
    assert rel.to_arrow().num_rows == g.rows
    assert rel.to_arrow().num_rows == g.rows
    assert positive.columns == ["id", "key", "country", "amount", "note"]


def test_ndjson_parquet_and_orc_read_with_their_types(tmp_path: Path):
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "x": pa.array([1.5, None, -2.25], pa.float64()),
            "s": pa.array(["a", "", None], pa.string()),
            "ok": pa.array([True, False, None], pa.bool_()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    pyarrow.orc.write_table(table, tmp_path / "t.orc")
    with open(tmp_path / "t.ndjson", "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
    for name in ["t.parquet", "t.orc", "t.ndjson"]:
        got = sluice.read(tmp_path / name)
        assert got.to_pylist() == table.to_pylist(), name
        assert got.schema.field("id").type == pa.int64(), name
        assert got.schema.field("x").type == pa.float64(), name
        assert got.schema.field("ok").type == pa.bool_(), name


def test_union_by_name_and_file_column(tmp_path: Path):
    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y\n")
    (tmp_path / "b.csv").write_text("name,id,extra\nz,3,e\n")
    t = sluice.read(tmp_path, file_column="file").sort_by("id")
    assert t.column("id").to_pylist() == [1, 2, 3]
    assert t.column("name").to_pylist() == ["x", "y", "z"]
    assert t.column("extra").to_pylist() == [None, None, "e"]
    assert [Path(f).name for f in t.column("file").to_pylist()] == ["a.csv", "a.csv", "b.csv"]


def test_explicit_schema_and_csv_options(tmp_path: Path):
    (tmp_path / "d.txt").write_text("id;v\n1;2.5\n2;3.5\n")
    t = sluice.read(tmp_path / "d.txt", format="csv", delimiter=";", schema="id BIGINT, v DOUBLE")
    assert t.schema.names == ["id", "v"]
    assert t.schema.field("v").type == pa.float64()
    assert t.column("v").to_pylist() == [2.5, 3.5]
    (tmp_path / "n.txt").write_text("1;x\n2;y\n")
    t = sluice.read(tmp_path / "n.txt", format="csv", header=False, delimiter=";")
    assert t.num_rows == 2 and t.column(1).to_pylist() == ["x", "y"]
    # No header and a schema: its names, by position.
    t = sluice.read(tmp_path / "n.txt", format="csv", header=False, delimiter=";", schema="id BIGINT, s VARCHAR")
    assert t.schema.names == ["id", "s"]
    assert t.to_pylist() == [{"id": 1, "s": "x"}, {"id": 2, "s": "y"}]


def test_pandas_and_polars_and_arrow_consumers(odd_dir: Path):
    pd = require("pandas")
    pl = require("polars")
    duckdb = require("duckdb")
    g = write_csv(odd_dir, files=2, rows=120)
    rel = sluice.scan(str(odd_dir))
    df = rel.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == g.rows and int(df["amount"].sum()) == g.amount
    pdf = rel.to_polars()
    assert isinstance(pdf, pl.DataFrame)
    assert pdf.height == g.rows and pdf["amount"].sum() == g.amount
    # The Arrow PyCapsule stream interface: taken directly, no copy through Python.
    assert pa.table(rel).num_rows == g.rows
    assert pl.DataFrame(rel).height == g.rows
    n, total = duckdb.sql("SELECT count(*), sum(amount) FROM rel").fetchall()[0]
    assert (n, total) == (g.rows, g.amount)


def test_bad_rows_are_rejected_with_a_warning_and_kept(tmp_path: Path):
    data = tmp_path / "in"
    g = write_csv(data, files=2, rows=100, bad_every=25)
    rejects = tmp_path / "rejects"
    with pytest.warns(sluice.UnreadRowsWarning, match=r"8 row\(s\) rejected"):
        t = sluice.read(data, rejects=rejects)
    assert t.num_rows == g.rows
    lines = (rejects / "rejects.ndjson").read_text().splitlines()
    assert len(lines) == 8
    first = json.loads(lines[0])
    text = json.dumps(first)
    assert "too_many_fields" in text and ".csv" in text


def test_on_error_skip_warns_and_fail_raises(tmp_path: Path):
    data = tmp_path / "in"
    g = write_csv(data, files=1, rows=60, bad_every=20)
    with pytest.warns(sluice.UnreadRowsWarning, match="skipped"):
        t = sluice.read(data, on_error="skip")
    assert t.num_rows == g.rows
    with pytest.raises(sluice.InputError, match=r"part 00 #0 ü\.csv:\d+"):
        sluice.read(data, on_error="fail")


def test_errors_are_sluice_exceptions(tmp_path: Path):
    with pytest.raises(sluice.InputError, match="no input files match|not found"):
        sluice.read(tmp_path / "missing" / "*.csv")
    with pytest.raises(sluice.InputError, match="not found"):
        sluice.read(tmp_path / "missing.csv")
    (tmp_path / "a.csv").write_text("id\n1\n")
    with pytest.raises(sluice.SqlError, match="nope"):
        sluice.scan(tmp_path / "a.csv").sql("SELECT nope FROM self")
    with pytest.raises(sluice.SqlError):
        sluice.scan(tmp_path / "a.csv").sql("SELEC 1")
    with pytest.raises(sluice.ConfigError, match="bogus"):
        sluice.read(tmp_path / "a.csv", bogus=1)
    with pytest.raises(sluice.ConfigError, match="on_error|reject"):
        sluice.read(tmp_path / "a.csv", on_error="ignore")
    assert issubclass(sluice.SqlError, sluice.SluiceError)
    assert issubclass(sluice.InputError, sluice.SluiceError)


def test_schema_conflict_is_a_schema_error(tmp_path: Path):
    pq.write_table(pa.table({"v": pa.array([1], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": pa.array([True], pa.bool_())}), tmp_path / "b.parquet")
    with pytest.raises(sluice.SchemaError, match="'v'"):
        sluice.read(tmp_path)


def test_empty_strings_and_nulls_survive(tmp_path: Path):
    (tmp_path / "e.csv").write_text('id,s\n1,""\n2,\n3,x\n')
    t = sluice.read(tmp_path / "e.csv")
    assert t.num_rows == 3
    assert t.column("s").to_pylist()[2] == "x"


def test_a_pyarrow_schema_gives_types_and_not_null(tmp_path: Path):
    (tmp_path / "a.csv").write_text('id,"odd ""name""",when,price\n1,2,2024-01-02 03:04:05,1.25\n2,,2024-02-03 00:00:00,2.50\n')
    schema = pa.schema(
        [
            pa.field("id", pa.int32(), nullable=False),
            ('odd "name"', pa.float64()),
            ("when", pa.timestamp("us")),
            ("price", pa.decimal128(10, 2)),
        ]
    )
    t = sluice.read(tmp_path / "a.csv", schema=schema)
    assert t.schema.field("id").type == pa.int32()
    assert t.schema.field('odd "name"').type == pa.float64()
    assert t.schema.field("when").type == pa.timestamp("us")
    assert t.schema.field("price").type == pa.decimal128(10, 2)
    assert t.column('odd "name"').to_pylist() == [2.0, None]
    # NOT NULL holds: a null id is a bad row.
    (tmp_path / "c.csv").write_text("id,x\n,1\n5,2\n")
    with pytest.warns(sluice.UnreadRowsWarning, match="rejected"):
        t = sluice.read(tmp_path / "c.csv", schema=pa.schema([pa.field("id", pa.int64(), nullable=False)]), rejects=tmp_path / "r")
    assert t.column("id").to_pylist() == [5]
    with pytest.raises(TypeError, match="schema"):
        sluice.read(tmp_path / "c.csv", schema=pa.schema([("id", pa.list_(pa.int64()))]))
