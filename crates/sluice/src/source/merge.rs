//! Merging per-file schemas by column name, widening compatible types.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::error::{Error, Result};
use crate::storage::format::Format;

/// A file's schema with where it came from, as input to [`merge_schemas`].
#[derive(Debug, Clone)]
pub struct FileSchema<'a> {
    /// The file, as shown to the user.
    pub file: &'a str,
    /// Its format (text formats may widen anything scalar to a string).
    pub format: Format,
    /// Its inferred or stored schema.
    pub schema: &'a Schema,
}

/// The merged schema and the widening decisions taken to build it.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Columns in order of first appearance.
    pub schema: Schema,
    /// One human-readable line per widened column.
    pub decisions: Vec<String>,
}

/// Merges schemas by column name.
///
/// Widening follows the chain int -> bigint -> double -> string, date -> timestamp, and any
/// type -> null-typed (all-empty) column. For text formats (CSV, NDJSON) any two scalar types
/// meet at string; for typed formats (Parquet, ORC) mixing e.g. a boolean with a number, or a
/// nested type with anything else, is an error naming both files.
pub fn merge_schemas(files: &[FileSchema<'_>]) -> Result<Merged> {
    // name -> (index in fields, type, file that set the type, format of that file)
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashMap<String, (DataType, String, bool)> = HashMap::new();
    let mut widened: HashMap<String, Vec<(String, DataType)>> = HashMap::new();
    for f in files {
        for field in f.schema.fields() {
            let name = field.name().clone();
            let dt = field.data_type().clone();
            match seen.get_mut(&name) {
                None => {
                    order.push(name.clone());
                    widened
                        .entry(name.clone())
                        .or_default()
                        .push((f.file.to_string(), dt.clone()));
                    seen.insert(name, (dt, f.file.to_string(), f.format.is_text()));
                }
                Some((cur, cur_file, cur_text)) => {
                    if *cur == dt {
                        continue;
                    }
                    let text = *cur_text && f.format.is_text();
                    let Some(w) = widen(cur, &dt, text) else {
                        return Err(Error::SchemaConflict {
                            column: name,
                            left_file: cur_file.clone(),
                            left_type: type_name(cur),
                            right_file: f.file.to_string(),
                            right_type: type_name(&dt),
                        });
                    };
                    let entry = widened.entry(name.clone()).or_default();
                    if !entry.iter().any(|(_, t)| *t == dt) {
                        entry.push((f.file.to_string(), dt.clone()));
                    }
                    if w != *cur {
                        *cur = w;
                        *cur_file = f.file.to_string();
                    }
                    *cur_text = *cur_text && f.format.is_text();
                }
            }
        }
    }
    let mut decisions = Vec::new();
    let fields: Vec<Field> = order
        .iter()
        .map(|name| {
            let (dt, _, _) = &seen[name];
            let variants = &widened[name];
            let final_dt = if *dt == DataType::Null {
                DataType::Utf8
            } else {
                dt.clone()
            };
            let typed: Vec<_> = variants
                .iter()
                .filter(|(_, t)| *t != DataType::Null)
                .collect();
            if typed.len() > 1 {
                let parts: Vec<String> = typed
                    .iter()
                    .map(|(file, t)| format!("{} in {}", type_name(t), file))
                    .collect();
                decisions.push(format!(
                    "column '{name}': {} -> {}",
                    parts.join(", "),
                    type_name(&final_dt)
                ));
            }
            Field::new(name, final_dt, true)
        })
        .collect();
    Ok(Merged {
        schema: Schema::new(fields),
        decisions,
    })
}

/// A short SQL-style name for a type, as users of DuckDB and Spark know them.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINT".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(tz)) => format!("TIMESTAMP WITH TIME ZONE ({tz})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

fn is_int(dt: &DataType) -> bool {
    dt.is_integer()
}

/// Bits of an integer type.
fn int_bits(dt: &DataType) -> u32 {
    use DataType::*;
    match dt {
        Int8 | UInt8 => 8,
        Int16 | UInt16 => 16,
        Int32 | UInt32 => 32,
        _ => 64,
    }
}

/// The narrowest integer type holding every value of both: signed with signed and unsigned
/// with unsigned keep their kind; a mix needs a signed type twice as wide as the unsigned
/// one, and `UBIGINT` with a signed type needs `DECIMAL(20,0)` (DuckDB's `HUGEINT`):
/// `BIGINT` would overflow on values above 2^63.
fn widen_ints(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    let signed = |bits: u32| match bits {
        8 => Int8,
        16 => Int16,
        32 => Int32,
        _ => Int64,
    };
    match (a.is_signed_integer(), b.is_signed_integer()) {
        (true, true) => signed(int_bits(a).max(int_bits(b))),
        (false, false) => match int_bits(a).max(int_bits(b)) {
            8 => UInt8,
            16 => UInt16,
            32 => UInt32,
            _ => UInt64,
        },
        _ => {
            let (s, u) = if a.is_signed_integer() {
                (a, b)
            } else {
                (b, a)
            };
            match (2 * int_bits(u)).max(int_bits(s)) {
                bits if bits <= 64 => signed(bits),
                _ => Decimal128(20, 0),
            }
        }
    }
}

/// (precision, scale) of an exact number type: decimals, and integers as the decimal that
/// holds them.
fn exact_digits(dt: &DataType) -> Option<(u8, i8)> {
    use DataType::*;
    Some(match dt {
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => (*p, *s),
        Int8 | UInt8 => (3, 0),
        Int16 | UInt16 => (5, 0),
        Int32 | UInt32 => (10, 0),
        Int64 => (19, 0),
        UInt64 => (20, 0),
        _ => return None,
    })
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_nested(dt: &DataType) -> bool {
    dt.is_nested()
}

fn finer(a: &TimeUnit, b: &TimeUnit) -> TimeUnit {
    fn rank(u: &TimeUnit) -> u8 {
        match u {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 1,
            TimeUnit::Microsecond => 2,
            TimeUnit::Nanosecond => 3,
        }
    }
    if rank(a) >= rank(b) {
        *a
    } else {
        *b
    }
}

/// The narrowest type both `a` and `b` fit in, or `None` when they cannot be merged.
pub fn widen(a: &DataType, b: &DataType, text: bool) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (Null, x) | (x, Null) => Some(x.clone()),
        (x, y) if is_int(x) && is_int(y) => Some(widen_ints(x, y)),
        // Exact numbers stay exact: a decimal meets an integer or a decimal as a decimal
        // wide enough for both (as in DuckDB), never as a float.
        (x, y) if exact_digits(x).is_some() && exact_digits(y).is_some() => {
            let ((p1, s1), (p2, s2)) = (exact_digits(x)?, exact_digits(y)?);
            let scale = s1.max(s2);
            let integer = (i16::from(p1) - i16::from(s1)).max(i16::from(p2) - i16::from(s2));
            let precision = integer + i16::from(scale);
            Some(match precision {
                p if p <= 38 => Decimal128(p as u8, scale),
                p if p <= 76 => Decimal256(p as u8, scale),
                _ => Float64,
            })
        }
        (x, y) if x.is_numeric() && y.is_numeric() => Some(Float64),
        (Date32 | Date64, Timestamp(u, tz)) | (Timestamp(u, tz), Date32 | Date64) => {
            Some(Timestamp(*u, tz.clone()))
        }
        (Timestamp(u1, tz1), Timestamp(u2, tz2)) if tz1 == tz2 => {
            Some(Timestamp(finer(u1, u2), tz1.clone()))
        }
        (x, y) if is_nested(x) || is_nested(y) => None,
        (x, y) if is_string(x) || is_string(y) => Some(Utf8),
        _ if text => Some(Utf8),
        _ => None,
    }
}

pub use crate::error::column_list;

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[(&str, DataType)]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn widening_chain() {
        use DataType::*;
        assert_eq!(widen(&Int32, &Int64, false), Some(Int64));
        // regression: UBIGINT with BIGINT was BIGINT (values above 2^63 overflowed) and a
        // decimal with an integer was DOUBLE (digits lost).
        assert_eq!(widen(&UInt64, &Int64, false), Some(Decimal128(20, 0)));
        assert_eq!(widen(&UInt32, &Int8, false), Some(Int64));
        assert_eq!(widen(&UInt8, &Int8, false), Some(Int16));
        assert_eq!(widen(&UInt16, &UInt64, false), Some(UInt64));
        assert_eq!(
            widen(&Decimal128(10, 2), &Int64, false),
            Some(Decimal128(21, 2))
        );
        assert_eq!(
            widen(&Decimal128(10, 2), &Decimal128(12, 4), false),
            Some(Decimal128(12, 4))
        );
        assert_eq!(
            widen(&Decimal128(38, 0), &Decimal128(38, 10), false),
            Some(Decimal256(48, 10))
        );
        assert_eq!(widen(&Decimal128(10, 2), &Float32, false), Some(Float64));
        assert_eq!(widen(&Int64, &Float64, false), Some(Float64));
        assert_eq!(widen(&Float64, &Utf8, false), Some(Utf8));
        assert_eq!(widen(&Boolean, &Int64, true), Some(Utf8));
        assert_eq!(widen(&Boolean, &Int64, false), None);
        assert_eq!(widen(&Null, &Date32, false), Some(Date32));
        let ts = Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(widen(&Date32, &ts, true), Some(ts.clone()));
    }

    #[test]
    fn merges_by_name_in_order_of_appearance() {
        let a = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
        let b = schema(&[
            ("name", DataType::Utf8),
            ("id", DataType::Float64),
            ("extra", DataType::Null),
        ]);
        let m = merge_schemas(&[
            FileSchema {
                file: "a.csv",
                format: Format::Csv,
                schema: &a,
            },
            FileSchema {
                file: "b.csv",
                format: Format::Csv,
                schema: &b,
            },
        ])
        .expect("merge");
        let names: Vec<_> = m.schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "name", "extra"]);
        assert_eq!(m.schema.field(0).data_type(), &DataType::Float64);
        assert_eq!(m.schema.field(2).data_type(), &DataType::Utf8);
        assert_eq!(m.decisions.len(), 1);
        assert!(
            m.decisions[0].contains("BIGINT in a.csv"),
            "{:?}",
            m.decisions
        );
    }

    #[test]
    fn conflict_names_both_files() {
        let a = schema(&[("flag", DataType::Boolean)]);
        let b = schema(&[("flag", DataType::Int64)]);
        let err = merge_schemas(&[
            FileSchema {
                file: "a.parquet",
                format: Format::Parquet,
                schema: &a,
            },
            FileSchema {
                file: "b.parquet",
                format: Format::Parquet,
                schema: &b,
            },
        ])
        .expect_err("conflict");
        let msg = err.to_string();
        assert!(
            msg.contains("a.parquet") && msg.contains("b.parquet"),
            "{msg}"
        );
    }
}
