//! Where each row came from, carried from the scan to the stages that may reject it.
//!
//! A lookup miss or a failed enrich call rejects a row long after the scan read it; its
//! reject record should still name the row's file, line and byte offset, as a row the scan
//! rejected does. When a job has such a stage, the scan appends three hidden columns
//! ([`FILE`], [`LINE`], [`OFFSET`]) to every row; the stages pass them on, read them when
//! they reject a row (and leave them out of the row's text), and they are dropped before any
//! SQL step, batch function or writer sees the rows ([`strip`]), so `SELECT *` never shows
//! them and no output holds them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::DataFrame;

use super::rejects::RejectRecord;

/// The file a row came from (as shown to the user).
pub const FILE: &str = "__sluice_origin_file";
/// The 1-based physical line where the row starts (text), or its 1-based row number
/// (Parquet/ORC read whole); 0 when unknown.
pub const LINE: &str = "__sluice_origin_line";
/// The byte offset of the row in the (uncompressed) file; NULL for columnar files.
pub const OFFSET: &str = "__sluice_origin_offset";

/// The three columns, in the order a scan appends them.
pub fn fields() -> [FieldRef; 3] {
    [
        Arc::new(Field::new(FILE, DataType::Utf8, false)),
        Arc::new(Field::new(LINE, DataType::UInt64, false)),
        Arc::new(Field::new(OFFSET, DataType::UInt64, true)),
    ]
}

/// The three origin columns of `rows` rows of `file` whose line (or row) numbers are
/// `lines`, for a read that knows no byte offsets (columnar files, databases).
pub fn without_offsets(
    file: &str,
    lines: datafusion::arrow::array::ArrayRef,
    rows: usize,
) -> datafusion::error::Result<[datafusion::arrow::array::ArrayRef; 3]> {
    Ok([
        datafusion::common::ScalarValue::Utf8(Some(file.to_string())).to_array_of_size(rows)?,
        lines,
        datafusion::arrow::array::new_null_array(&DataType::UInt64, rows),
    ])
}

/// True for the name of one of the origin columns.
pub fn is_origin(name: &str) -> bool {
    name == FILE || name == LINE || name == OFFSET
}

/// `df` without the origin columns (itself when it has none).
pub fn strip(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    if !df.schema().fields().iter().any(|f| is_origin(f.name())) {
        return Ok(df);
    }
    df.drop_columns(&[FILE, LINE, OFFSET])
}

/// Where the origin columns sit in a stage's input (absent when the job needs none).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    file: Option<usize>,
    line: Option<usize>,
    offset: Option<usize>,
    /// Every other column, for the row's text.
    rest: Vec<usize>,
}

impl Origin {
    /// The origin columns of `schema`.
    pub fn of(schema: &Schema) -> Origin {
        let at = |name| schema.index_of(name).ok();
        Origin {
            file: at(FILE),
            line: at(LINE),
            offset: at(OFFSET),
            rest: (0..schema.fields().len())
                .filter(|&i| !is_origin(schema.field(i).name()))
                .collect(),
        }
    }

    /// Fills in the file, line and byte offset of row `row` of `batch` (left as they are
    /// when the input carries no origin).
    pub fn fill(&self, batch: &RecordBatch, row: usize, record: &mut RejectRecord) {
        if let Some(c) = self.file {
            let files = batch.column(c).as_string::<i32>();
            if files.is_valid(row) {
                record.file = files.value(row).to_string();
            }
        }
        if let Some(c) = self.line {
            let lines = batch.column(c).as_primitive::<UInt64Type>();
            if lines.is_valid(row) {
                record.line = lines.value(row);
            }
        }
        if let Some(c) = self.offset {
            let offsets = batch.column(c).as_primitive::<UInt64Type>();
            if offsets.is_valid(row) {
                record.byte_offset = offsets.value(row);
            } else {
                record.columnar = self.file.is_some();
            }
        }
    }

    /// Row `row` of `batch` as JSON text without the origin columns (see
    /// [`super::rejects::row_json`]).
    pub fn row_json(&self, batch: &RecordBatch, row: usize) -> (String, bool) {
        let one = batch.slice(row, 1);
        if self.file.is_none() && self.line.is_none() && self.offset.is_none() {
            return super::rejects::row_json(&one);
        }
        match one.project(&self.rest) {
            Ok(visible) => super::rejects::row_json(&visible),
            Err(_) => super::rejects::row_json(&one),
        }
    }
}
