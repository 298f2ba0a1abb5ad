//! The quickstart pipeline (`examples/quickstart/pipeline.toml`) written in code.
//!
//! ```sh
//! cargo run -p sluice --example quickstart
//! ```
//!
//! Reads three months of drifting CSV files and late NDJSON records, joins the categories
//! lookup, prices the orders with SQL (using a custom scalar function), and writes Parquet
//! partitioned by country to `examples/quickstart/out-code/`.

use std::path::PathBuf;
use std::sync::Arc;

use sluice::datafusion::arrow::array::{ArrayRef, Float64Array};
use sluice::datafusion::arrow::datatypes::DataType;
use sluice::datafusion::common::cast::as_float64_array;
use sluice::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use sluice::lookup::{KeyPair, LookupSpec};
use sluice::sink::WriteMode;
use sluice::{Pipeline, ReadOptions, SinkOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let at = |p: &str| base.join(p).display().to_string();

    // A scalar function for SQL: the net amount after a discount, rounded to cents.
    let net = create_udf(
        "net_amount",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let args = ColumnarValue::values_to_arrays(args)?;
            let (amount, discount) = (as_float64_array(&args[0])?, as_float64_array(&args[1])?);
            let net: Float64Array = amount
                .iter()
                .zip(discount.iter())
                .map(|(a, d)| a.map(|a| ((a * (1.0 - d.unwrap_or(0.0))) * 100.0).round() / 100.0))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(net) as ArrayRef))
        }),
    );

    let report = Pipeline::read_with(ReadOptions {
        paths: vec![at("data/2024-*/*.csv*"), at("data/late/")],
        file_column: Some("source_file".into()),
        ..ReadOptions::default()
    })
    .lookup(LookupSpec {
        name: "categories".into(),
        paths: vec![at("lookups/categories.csv")],
        on: vec![KeyPair::same("category")],
        columns: Some(vec!["department".into(), "vat_rate".into()]),
        ..LookupSpec::default()
    })
    .udf(net)
    .sql_named(
        "priced",
        "SELECT order_id, ts, country, category, amount,
                coalesce(discount, 0.0) AS discount,
                net_amount(amount, discount) AS net_amount,
                department, round(amount * vat_rate, 2) AS vat,
                channel, note, source_file
         FROM source
         WHERE amount > 0",
    )
    .write(SinkOptions {
        path: at("out-code"),
        partition_by: vec!["country".into()],
        mode: WriteMode::Overwrite,
        ..SinkOptions::default()
    })
    .run()
    .await?;

    println!(
        "{} rows in, {} out, {} removed by SQL, {} files written to {}",
        report.rows_in,
        report.rows_out,
        report.rows_removed_by_sql,
        report.files_written,
        report.output
    );
    assert_eq!(
        report.rows_in + report.rows_added_by_sql,
        report.rows_out + report.rows_rejected + report.rows_skipped + report.rows_removed_by_sql
    );
    Ok(())
}
