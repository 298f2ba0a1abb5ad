//! Columns read from Hive-style folder names (`country=DE/year=2024/part-0.parquet`).

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;

use super::temporal::{shape, Shape};
use super::{InputFile, SourceFile};
use crate::error::{Error, Result};

/// A column whose value comes from the folder a file sits in.
#[derive(Debug, Clone)]
pub struct HiveColumn {
    /// The column (BIGINT when every value is an integer, DATE when every value is a date,
    /// else VARCHAR).
    pub field: Field,
}

impl HiveColumn {
    /// The typed value of this column for a file.
    pub fn value_for(&self, file: &InputFile) -> Result<ScalarValue> {
        let raw = file
            .partitions
            .iter()
            .find(|(k, _)| k == self.field.name())
            .and_then(|(_, v)| v.clone());
        let text = ScalarValue::Utf8(raw);
        text.cast_to(self.field.data_type()).map_err(|e| {
            Error::file(
                &file.display,
                format!("folder value for '{}': {e}", self.field.name()),
            )
        })
    }
}

/// The Hive columns of a set of files: present when every file has the same folder keys in
/// the same order. Keys that are also data columns are left to the data.
pub fn hive_columns(files: &[SourceFile], data: &Schema) -> Vec<HiveColumn> {
    let Some(first) = files.first() else {
        return Vec::new();
    };
    let keys: Vec<&String> = first.input.partitions.iter().map(|(k, _)| k).collect();
    if keys.is_empty() {
        return Vec::new();
    }
    let same = files.iter().all(|f| {
        f.input.partitions.len() == keys.len()
            && f.input
                .partitions
                .iter()
                .zip(&keys)
                .all(|((k, _), key)| k == *key)
    });
    if !same {
        return Vec::new();
    }
    keys.iter()
        .enumerate()
        .filter(|(_, k)| data.index_of(k).is_err())
        .map(|(i, k)| {
            let values = files
                .iter()
                .filter_map(|f| f.input.partitions[i].1.as_deref());
            HiveColumn {
                field: Field::new(k.as_str(), value_type(values), true),
            }
        })
        .collect()
}

/// BIGINT if every value is an integer, DATE if every value is a date, else VARCHAR.
fn value_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    let mut any = false;
    let mut ints = true;
    let mut dates = true;
    for v in values {
        any = true;
        ints &= v.parse::<i64>().is_ok();
        dates &= shape(v) == Shape::Date;
    }
    match (any, ints, dates) {
        (true, true, _) => DataType::Int64,
        (true, _, true) => DataType::Date32,
        _ => DataType::Utf8,
    }
}
