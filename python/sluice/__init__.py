"""sluice: ingest many data files in parallel, enrich and transform them, write clean output.

The engine is sluice's Rust engine (Apache DataFusion underneath): files are read, decoded,
enriched and written on all cores with the GIL released, and Arrow data reaches Python
without copies (the Arrow C data and C stream interfaces). Every row is accounted for: a
row that cannot be read is rejected into a file that names its file, line and reason, and
is said in a warning or in the report, never silently dropped.

Quickstart::

    import sluice

    table = sluice.read("data/*.csv")                     # a pyarrow.Table
    rel = sluice.scan("data/", union_by_name=True)        # lazy
    top = rel.sql("SELECT country, count(*) AS n FROM self GROUP BY country")
    top.to_pandas()

    report = sluice.run("pipeline.toml")                  # a pipeline file
    print(report.rows_in, report.rows_out, report.rows_rejected)
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import pyarrow as pa

from sluice import _sluice
from sluice._sluice import (
    ApiError,
    ConfigError,
    FunctionError,
    InputError,
    SchemaError,
    SluiceError,
    SqlError,
    UnreadRowsWarning,
    __version__,
)

__all__ = [
    "ApiError",
    "ConfigError",
    "FunctionError",
    "InputError",
    "Pipeline",
    "Relation",
    "Report",
    "SchemaError",
    "SluiceError",
    "SqlError",
    "UnreadRowsWarning",
    "__version__",
    "read",
    "run",
    "scan",
]

#: One path (a file, a folder, a glob, an object-store or ``postgres://`` URL) or several.
Paths = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


def _paths(paths: Paths) -> Any:
    if isinstance(paths, (str, os.PathLike)):
        return os.fspath(paths)
    return [os.fspath(p) for p in paths]


def _options(format: Optional[str], options: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in options.items() if v is not None}
    if format is not None:
        out["format"] = format
    return out


def _sql_type(t: pa.DataType) -> str:
    simple = {
        pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INT", pa.int64(): "BIGINT",
        pa.uint8(): "TINYINT UNSIGNED", pa.uint16(): "SMALLINT UNSIGNED",
        pa.uint32(): "INT UNSIGNED", pa.uint64(): "BIGINT UNSIGNED",
        pa.float32(): "REAL", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
        pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.date32(): "DATE",
        pa.binary(): "BYTEA",
    }
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t) and t.tz is None:
        return "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    raise TypeError(f"schema: {t} has no sluice SQL type here; give the schema as text ('id BIGINT, ...')")


def _schema_text(schema: Any) -> Any:
    """A ``pyarrow.Schema`` as the schema text sluice takes (``"id" BIGINT NOT NULL, ...``)."""
    if not isinstance(schema, pa.Schema):
        return schema
    parts = []
    for field in schema:
        name = '"' + field.name.replace('"', '""') + '"'
        parts.append(f"{name} {_sql_type(field.type)}" + ("" if field.nullable else " NOT NULL"))
    return ", ".join(parts)


class Relation:
    """A lazy relation: files (or a database table) read by sluice's readers, then SQL.

    Nothing is read until rows are asked for (:meth:`to_arrow`, :meth:`to_batches`,
    :meth:`to_pandas`, :meth:`to_polars`, or a consumer of the Arrow PyCapsule stream
    interface such as ``pyarrow.table(rel)``, ``polars.DataFrame(rel)`` or
    ``duckdb.sql("SELECT ... FROM rel")``). Each of those reads the inputs again.
    Rows that could not be read are not in the result: each kind is said in an
    :class:`UnreadRowsWarning`, rejected rows are kept in the file it names.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _sluice.Relation) -> None:
        self._native = native

    @property
    def schema(self) -> pa.Schema:
        """The columns and types of the rows."""
        return self._native.schema

    @property
    def columns(self) -> list:
        """The column names."""
        return self._native.schema.names

    def sql(self, query: str, table_name: Optional[str] = None) -> "Relation":
        """Runs SQL (DataFusion's dialect) over this relation, which the query reads as
        ``self`` and ``source`` (or as ``table_name``). The query is planned now (a bad
        query raises :class:`SqlError` here); it runs when rows are asked for."""
        return Relation(self._native.sql(query, table_name))

    def to_arrow(self) -> pa.Table:
        """Reads every row into one ``pyarrow.Table``."""
        return self._native.to_arrow()

    def to_batches(self) -> pa.RecordBatchReader:
        """The rows as a streaming ``pyarrow.RecordBatchReader``: batches are read as they
        are consumed, a few at a time, so memory stays bounded whatever the input's size."""
        return self._native.to_batches()

    def to_pandas(self, **kwargs: Any) -> Any:
        """The rows as a ``pandas.DataFrame`` (needs pandas); keyword arguments go to
        ``pyarrow.Table.to_pandas``."""
        return self.to_arrow().to_pandas(**kwargs)

    def to_polars(self) -> Any:
        """The rows as a ``polars.DataFrame`` (needs polars)."""
        import polars

        return polars.from_arrow(self.to_arrow())

    def explain(self) -> str:
        """The logical and physical plans the engine will run, as text."""
        return self._native.explain()

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The Arrow PyCapsule stream interface (rows stream batch by batch)."""
        return self._native.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        return repr(self._native)


def scan(
    paths: Paths,
    format: Optional[str] = None,
    *,
    schema: Optional[Union[str, pa.Schema]] = None,
    union_by_name: Optional[bool] = None,
    file_column: Optional[str] = None,
    on_error: Optional[str] = None,
    infer_rows: Optional[int] = None,
    header: Optional[bool] = None,
    delimiter: Optional[str] = None,
    hive_partitioning: Optional[bool] = None,
    storage_options: Optional[Mapping[str, str]] = None,
    rejects: Optional[Union[str, "os.PathLike[str]"]] = None,
    threads: Optional[int] = None,
    **options: Any,
) -> Relation:
    """A lazy :class:`Relation` over files, folders, globs, object-store URLs
    (``s3://``, ``gs://``, ``az://``...) or a ``postgres://`` table.

    The keyword options are those of the CLI and the pipeline file's ``[source]``, in Python
    style: ``format`` (``csv``, ``ndjson``, ``parquet``, ``orc``; default: each file's
    extension), ``schema`` (``"id BIGINT, ts TIMESTAMP"``, a file holding it, or a
    ``pyarrow.Schema``: listed columns get these types, non-nullable fields are NOT NULL),
    ``union_by_name`` (default True), ``file_column`` (a column naming each row's file),
    ``on_error`` (``"reject"`` (default), ``"skip"`` or ``"fail"``), ``infer_rows``,
    ``header``, ``delimiter``, ``quote``, ``escape``, ``comment``, ``skip_rows``,
    ``detect_dialect``, ``null_value``, ``hive_partitioning``, ``allow_empty``,
    ``allow_failed_files``, ``split_min_size``, ``max_record_bytes``, and for databases
    ``table``, ``query``, ``partition_column``, ``partitions``... An unknown option raises
    :class:`ConfigError` naming it.

    ``storage_options`` holds the object stores' keys (``endpoint``, ``region``,
    credentials, ``allow_http``...); ``rejects`` is the folder rejected rows are written to
    (default: a new folder under the system's temporary folder); ``threads`` the partitions
    to read with (default: the number of cores).
    """
    opts = _options(
        format,
        dict(
            schema=_schema_text(schema),
            union_by_name=union_by_name,
            file_column=file_column,
            on_error=on_error,
            infer_rows=infer_rows,
            header=header,
            delimiter=delimiter,
            hive_partitioning=hive_partitioning,
            **options,
        ),
    )
    native = _sluice.scan(
        _paths(paths),
        opts,
        os.fspath(rejects) if rejects is not None else None,
        threads,
        dict(storage_options) if storage_options else None,
    )
    return Relation(native)


def read(paths: Paths, format: Optional[str] = None, **options: Any) -> pa.Table:
    """Reads files, folders, globs or a database table into one ``pyarrow.Table``.

    The same options as :func:`scan`. Rows that could not be read are not in the table: an
    :class:`UnreadRowsWarning` says how many and where the rejected ones were kept.
    """
    return scan(paths, format, **options).to_arrow()


class Report:
    """What a job did, with the same fields as the CLI's ``--report-json``: ``rows_in``,
    ``rows_out``, ``rows_rejected``, ``rows_skipped``, ``rows_removed_by_sql``,
    ``files_read``, ``files_written``, ``bytes_read``, ``bytes_written``, ``seconds``,
    ``output``, ``rejects_path``, per-file counts in ``files``, ``enrich`` and ``lookups``
    statistics... Fields are attributes; :meth:`to_dict` gives them all."""

    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_skipped: int
    rows_removed_by_sql: int
    rows_added_by_sql: int
    files_read: int
    files_written: int
    bytes_read: int
    bytes_written: int
    seconds: float
    output: str
    rejects_path: Optional[str]

    def __init__(self, fields: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"Report has no field '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Report is read-only")

    def __dir__(self) -> Iterable[str]:
        return list(self._fields) + ["to_dict"]

    def to_dict(self) -> dict:
        """Every field, as ``--report-json`` writes them."""
        return copy.deepcopy(self._fields)

    def __repr__(self) -> str:
        f = self._fields
        return (
            f"Report(rows_in={f.get('rows_in')}, rows_out={f.get('rows_out')}, "
            f"rows_rejected={f.get('rows_rejected')}, output={f.get('output')!r})"
        )


def _progress(progress: Optional[bool]) -> bool:
    if progress is None:
        return sys.stderr is not None and sys.stderr.isatty()
    return bool(progress)


def run(pipeline: Union[str, "os.PathLike[str]", Mapping[str, Any]], *, progress: Optional[bool] = None) -> Report:
    """Runs a pipeline: a pipeline file (``pipeline.toml``) or a dict of the same shape
    (``{"source": {...}, "transform": [...], "sink": {...}}``; stages of one kind run in
    list order, kinds in the dict's key order; relative paths are the working
    directory's). Returns its :class:`Report`. Nothing is committed unless the whole job
    succeeded (and the row ledger balanced). ``progress`` draws a progress line on
    stderr (default: when stderr is a terminal)."""
    if isinstance(pipeline, Mapping):
        text = _sluice.run_toml(dict(pipeline), _progress(progress))
    else:
        text = _sluice.run_file(os.fspath(pipeline), _progress(progress))
    return Report(json.loads(text))


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas"


def _to_batch(out: Any, name: str) -> pa.RecordBatch:
    if isinstance(out, pa.RecordBatch):
        return out
    if _is_pandas(out):
        return pa.RecordBatch.from_pandas(out, preserve_index=False)
    if not isinstance(out, pa.Table):
        if hasattr(out, "__arrow_c_stream__") or hasattr(out, "to_arrow"):
            out = pa.table(out) if hasattr(out, "__arrow_c_stream__") else out.to_arrow()
        elif hasattr(out, "__arrow_c_array__"):
            return pa.record_batch(out)
        else:
            raise TypeError(
                f"batch function '{name}' returned {type(out).__name__}: return a "
                "pyarrow.RecordBatch, a pyarrow.Table or a pandas DataFrame"
            )
    batches = out.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=out.schema)
    return batches[0]


def _batch_function(fn: Callable[[pa.RecordBatch], Any], name: str, schema: Optional[pa.Schema]) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    def call(batch: pa.RecordBatch) -> pa.RecordBatch:
        if schema is not None and batch.num_rows == 0:
            # The engine learns the stage's columns from an empty batch first.
            return pa.RecordBatch.from_pylist([], schema=schema)
        out = _to_batch(fn(batch), name)
        if schema is not None and out.schema != schema:
            cast = pa.Table.from_batches([out]).select(schema.names).cast(schema).combine_chunks()
            batches = cast.to_batches()
            out = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=schema)
        return out

    return call


class Pipeline:
    """A job built step by step, mirroring the Rust builder and the pipeline file: read,
    then stages in the order they are added (SQL, lookups, enrich, Python functions), then
    write; :meth:`run` runs it and returns its :class:`Report`.

    ::

        report = (
            sluice.Pipeline()
            .read("events/*.csv")
            .lookup("countries", "countries.csv", on="country_code")
            .sql("SELECT * FROM source WHERE amount > 0")
            .map_batches(score)                      # a Python function over batches
            .write("out/", partition_by="country")
            .run()
        )
    """

    def __init__(self) -> None:
        self._steps: list = []
        self._names = 0

    def read(self, paths: Paths, format: Optional[str] = None, *, storage_options: Optional[Mapping[str, str]] = None, **options: Any) -> "Pipeline":
        """What to read: the options of :func:`scan` (the ``[source]`` keys).
        ``storage_options`` serve the read, the lookups and the write."""
        if storage_options:
            self._steps.insert(0, ("storage", dict(storage_options)))
        if "schema" in options:
            options = dict(options, schema=_schema_text(options["schema"]))
        self._steps.append(("read", _paths(paths), _options(format, options)))
        return self

    def sql(self, query: str, name: Optional[str] = None) -> "Pipeline":
        """A SQL step over ``source`` (the previous stage's output); ``name`` makes it a
        table later steps can read too."""
        self._steps.append(("sql", query, name))
        return self

    def lookup(self, name: str, paths: Paths, on: Any, **options: Any) -> "Pipeline":
        """A broadcast lookup (the ``[[lookup]]`` keys): rows of a small table joined by
        ``on`` (a column, a list, or ``{"row_column": "table_column"}``)."""
        self._steps.append(("lookup", dict(name=name, paths=_paths(paths), on=on, **options)))
        return self

    def enrich(self, name: str, url: str, **options: Any) -> "Pipeline":
        """An HTTP enrich stage (the ``[[enrich]]`` keys: ``extract``, ``concurrency``,
        ``rate_limit``, ``retries``, ``cache``, ``on_error``...): one call per distinct
        key, answers joined back to every row."""
        self._steps.append(("enrich", dict(name=name, url=url, **options)))
        return self

    def map_batches(self, fn: Callable[[pa.RecordBatch], Any], *, name: Optional[str] = None, schema: Optional[pa.Schema] = None) -> "Pipeline":
        """A Python function as a stage: ``fn`` takes a ``pyarrow.RecordBatch`` and returns
        one (or a ``pyarrow.Table`` or a pandas DataFrame). It runs one call at a time (the
        GIL) while reading, decoding, enrich and writing go on in parallel in Rust. Without
        ``schema`` the function is first called on an empty batch to learn its output
        columns; give ``schema`` (a ``pyarrow.Schema``) when it cannot tell from an empty
        batch (pandas turns empty text columns into nulls). An exception stops the job,
        commits nothing, and is raised as the cause of a :class:`FunctionError`."""
        if name is None:
            self._names += 1
            name = getattr(fn, "__name__", "function")
            if not name.isidentifier():
                name = f"function_{self._names}"
            # Stages are found by name: two functions of one name get distinct ones.
            taken = {step[1] for step in self._steps if step[0] == "map_batches"}
            base, n = name, 1
            while name in taken:
                n += 1
                name = f"{base}_{n}"
        self._steps.append(("map_batches", name, _batch_function(fn, name, schema)))
        return self

    def write(self, path: Union[str, "os.PathLike[str]"], format: Optional[str] = None, **options: Any) -> "Pipeline":
        """Where and how to write (the ``[sink]`` keys): ``format`` (``parquet``, ``csv``,
        ``ndjson``), ``partition_by``, ``mode`` (``error``, ``overwrite``, ``append``),
        ``files``, ``compression``, ``rejects``..."""
        self._steps.append(("write", os.fspath(path), _options(format, options)))
        return self

    def threads(self, n: int) -> "Pipeline":
        """Threads (and partitions) to use (default: the number of cores)."""
        self._steps.append(("threads", int(n)))
        return self

    def run(self, *, progress: Optional[bool] = None) -> Report:
        """Runs the job: the output is committed atomically only when every step
        succeeded and every row is accounted for. Ctrl-C cancels it and commits nothing."""
        return Report(json.loads(_sluice.run_steps(list(self._steps), _progress(progress))))
