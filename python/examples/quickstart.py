"""The quickstart in Python, on the bundled sample data (examples/quickstart):

    python python/examples/quickstart.py

1. the pipeline file, run as is;
2. the same orders read lazily, queried with SQL, handed to pyarrow (and pandas/polars
   when installed);
3. the pipeline built in code, with a Python function as a stage.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import sluice

HERE = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def main() -> None:
    # 1. The pipeline file: the same report as `sluice run --report-json`.
    report = sluice.run(HERE / "pipeline.toml", progress=False)
    print(f"pipeline file: {report.rows_in} rows in, {report.rows_out} out, "
          f"{report.rows_rejected} rejected -> {report.output}")

    # 2. Lazy: read the orders (drifting columns, gzip, NDJSON), query them with SQL.
    orders = sluice.scan([str(HERE / "data" / "2024-*" / "*.csv*"), str(HERE / "data" / "late")])
    by_country = orders.sql(
        "SELECT country, count(*) AS orders, round(sum(amount), 2) AS amount "
        "FROM self GROUP BY country ORDER BY amount DESC"
    )
    table = by_country.to_arrow()
    print(table.to_string(preview_cols=3))

    # 3. In code, with a Python function over batches (it runs while Rust reads and writes).
    def flag_big(batch: pa.RecordBatch) -> pa.RecordBatch:
        big = pc.greater(batch.column("amount"), 100)
        return pa.RecordBatch.from_arrays(
            list(batch.columns) + [big], names=list(batch.schema.names) + ["big"]
        )

    with tempfile.TemporaryDirectory() as out:
        report = (
            sluice.Pipeline()
            .read([str(HERE / "data" / "2024-*" / "*.csv*"), str(HERE / "data" / "late")], file_column="source_file")
            .lookup("categories", HERE / "lookups" / "categories.csv", on="category", columns=["department"])
            .sql("SELECT order_id, country, amount, department FROM source WHERE amount > 0")
            .map_batches(flag_big)
            .write(Path(out) / "orders", format="parquet", partition_by="country")
            .run(progress=False)
        )
        big = sluice.read(Path(out) / "orders").filter(pc.field("big"))
        print(f"in code: {report.rows_out} rows written, {big.num_rows} of them over 100")
        if report.rows_in != report.rows_out + report.rows_rejected + report.rows_removed_by_sql:
            sys.exit("the ledger does not balance")


if __name__ == "__main__":
    main()
