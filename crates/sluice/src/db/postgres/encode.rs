//! Arrow columns into a PostgreSQL table: the table a schema makes ([`create_type`]), which
//! Arrow type goes into which column type ([`Encoder::for_column`]), and rows as binary
//! `COPY` data ([`encode`]).
//!
//! | Arrow | column types it is written into (a new table's first) |
//! |---|---|
//! | Boolean | `boolean` |
//! | Int8..Int64, UInt8..UInt64 | `smallint`/`integer`/`bigint` (range-checked), `numeric` |
//! | Float32, Float64 | `real` (Float32 only), `double precision` |
//! | Decimal128(p, s) | `numeric(p, s)` |
//! | Utf8 (all forms) | `text`, `varchar`, `char`, `name`, enums, `json`, `jsonb`, `uuid` |
//! | Binary (all forms) | `bytea` |
//! | Date32, Date64 | `date` |
//! | Time32, Time64 | `time` (nanoseconds cut to microseconds) |
//! | Timestamp | `timestamp`, `timestamptz` (nanoseconds cut to microseconds) |
//! | List, LargeList of the above | a one-dimensional array of the element's type (`text[]`...) |
//!
//! A list of lists is not written (PostgreSQL's arrays of more dimensions must be
//! rectangular): flatten it or turn it into text in a SQL step.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use tokio_postgres::types::{Kind as PgKind, Type};

/// The header of binary `COPY` data.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The trailer of binary `COPY` data.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The column type a new table gives an Arrow type (`None`: not written yet).
pub fn create_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20, 0)".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) if *s >= 0 => format!("numeric({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::List(item) | DataType::LargeList(item) if !is_list(item.data_type()) => {
            format!("{}[]", create_type(item.data_type())?)
        }
        _ => return None,
    })
}

fn is_list(dt: &DataType) -> bool {
    matches!(dt, DataType::List(_) | DataType::LargeList(_))
}

/// How one output column's values are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoder {
    /// `boolean`.
    Bool,
    /// An integer into `smallint` (2), `integer` (4) or `bigint` (8) bytes.
    Int(u8),
    /// An integer into `numeric`.
    IntNumeric,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// A float into `numeric`, by its shortest decimal form.
    FloatNumeric,
    /// A decimal of this scale into `numeric`.
    Numeric(i8),
    /// Text as it is (text types, enums, `json`).
    Text,
    /// Text into `jsonb` (a version byte first).
    Jsonb,
    /// Text into `uuid` (parsed).
    Uuid,
    /// `bytea`.
    Bytes,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timestamp` or `timestamptz` (both microseconds since 2000-01-01; Arrow's values are UTC).
    Timestamp,
    /// A list into a one-dimensional array: each item with `item`, the array's element type
    /// by its OID.
    Array {
        /// How each item is written.
        item: Box<Encoder>,
        /// The element type's OID.
        element: u32,
    },
}

impl Encoder {
    /// How to write a column of Arrow type `dt` into a table column of type `target`:
    /// `Err` with the line to show when it cannot be.
    pub fn for_column(column: &str, dt: &DataType, target: &Type) -> Result<Encoder, String> {
        let base = match target.kind() {
            PgKind::Domain(base) => base.clone(),
            _ => target.clone(),
        };
        let is_enum = matches!(base.kind(), PgKind::Enum(_));
        let int = DataType::is_integer;
        let text = matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let enc = match (dt, &base) {
            (DataType::Boolean, &Type::BOOL) => Encoder::Bool,
            (d, &Type::INT2) if int(d) => Encoder::Int(2),
            (d, &Type::INT4) if int(d) => Encoder::Int(4),
            (d, &Type::INT8) if int(d) => Encoder::Int(8),
            (d, &Type::NUMERIC) if int(d) => Encoder::IntNumeric,
            (DataType::Float32, &Type::FLOAT4) => Encoder::Float4,
            (DataType::Float32 | DataType::Float64, &Type::FLOAT8) => Encoder::Float8,
            (DataType::Float32 | DataType::Float64, &Type::NUMERIC) => Encoder::FloatNumeric,
            (DataType::Decimal128(_, s), &Type::NUMERIC) => Encoder::Numeric(*s),
            (_, &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::JSON)
                if text =>
            {
                Encoder::Text
            }
            (_, _) if text && is_enum => Encoder::Text,
            (_, &Type::JSONB) if text => Encoder::Jsonb,
            (_, &Type::UUID) if text => Encoder::Uuid,
            (DataType::Binary | DataType::LargeBinary | DataType::BinaryView, &Type::BYTEA) => {
                Encoder::Bytes
            }
            (DataType::Date32 | DataType::Date64, &Type::DATE) => Encoder::Date,
            (DataType::Time32(_) | DataType::Time64(_), &Type::TIME) => Encoder::Time,
            (DataType::Timestamp(_, _), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => {
                Encoder::Timestamp
            }
            (DataType::List(item) | DataType::LargeList(item), _)
                if !is_list(item.data_type()) && matches!(base.kind(), PgKind::Array(_)) =>
            {
                let PgKind::Array(element) = base.kind() else {
                    unreachable!("matched as an array")
                };
                let item =
                    Encoder::for_column(column, item.data_type(), element).map_err(|_| {
                        format!(
                        "column '{column}' is {dt} here but {} in the table: cast its items in a \
                         SQL step to a type that fits",
                        target.name()
                    )
                    })?;
                Encoder::Array {
                    item: Box::new(item),
                    element: element.oid(),
                }
            }
            _ => {
                return Err(format!(
                    "column '{column}' is {dt} here but {} in the table: cast it in a SQL step \
                     to a type that fits",
                    target.name()
                ))
            }
        };
        Ok(enc)
    }
}

/// A value that cannot go into its column: the column's index, the row and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    /// The column's index.
    pub column: usize,
    /// The row in the batch.
    pub row: usize,
    /// What is wrong.
    pub what: String,
}

/// Appends the rows of `batch` to `buf` as binary `COPY` data, each column written with its
/// encoder; the number of rows.
pub fn encode(batch: &RecordBatch, encoders: &[Encoder], buf: &mut BytesMut) -> Result<u64, Unfit> {
    let columns: Vec<&ArrayRef> = batch.columns().iter().collect();
    let fields = columns.len() as i16;
    for row in 0..batch.num_rows() {
        buf.put_i16(fields);
        for (c, (array, enc)) in columns.iter().zip(encoders).enumerate() {
            if array.is_null(row) {
                buf.put_i32(-1);
                continue;
            }
            value(array, enc, row, buf).map_err(|what| Unfit {
                column: c,
                row,
                what,
            })?;
        }
    }
    Ok(batch.num_rows() as u64)
}

/// An integer array's value as an i128.
fn int_value(array: &ArrayRef, row: usize) -> Option<i128> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row) as i128,
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row) as i128,
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row) as i128,
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row) as i128,
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row) as i128,
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row) as i128,
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row) as i128,
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row) as i128,
        _ => return None,
    })
}

/// A Float32 or Float64 array's value as an f64.
fn float_value(array: &ArrayRef, row: usize) -> f64 {
    match array.data_type() {
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row) as f64,
        _ => array.as_primitive::<Float64Type>().value(row),
    }
}

fn text_value(array: &ArrayRef, row: usize) -> Option<&str> {
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        DataType::Utf8View => array.as_string_view().value(row),
        _ => return None,
    })
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) -> Result<(), String> {
    let len = i32::try_from(bytes.len()).map_err(|_| "a value over 2 GiB".to_string())?;
    buf.put_i32(len);
    buf.put_slice(bytes);
    Ok(())
}

fn value(array: &ArrayRef, enc: &Encoder, row: usize, buf: &mut BytesMut) -> Result<(), String> {
    let unexpected = || format!("a {} value where {enc:?} was planned", array.data_type());
    match enc {
        Encoder::Bool => {
            buf.put_i32(1);
            buf.put_u8(array.as_boolean().value(row) as u8);
        }
        Encoder::Int(size) => {
            let v = int_value(array, row).ok_or_else(unexpected)?;
            let out_of_range = || format!("{v} does not fit a {}-byte integer column", size);
            buf.put_i32(*size as i32);
            match size {
                2 => buf.put_i16(i16::try_from(v).map_err(|_| out_of_range())?),
                4 => buf.put_i32(i32::try_from(v).map_err(|_| out_of_range())?),
                _ => buf.put_i64(i64::try_from(v).map_err(|_| out_of_range())?),
            }
        }
        Encoder::IntNumeric => {
            let v = int_value(array, row).ok_or_else(unexpected)?;
            put_numeric(buf, v, 0);
        }
        Encoder::Float4 => {
            buf.put_i32(4);
            buf.put_f32(array.as_primitive::<Float32Type>().value(row));
        }
        Encoder::Float8 => {
            buf.put_i32(8);
            buf.put_f64(float_value(array, row));
        }
        Encoder::FloatNumeric => put_float_numeric(buf, float_value(array, row))?,
        Encoder::Numeric(scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            put_numeric(buf, v, *scale);
        }
        Encoder::Text => put_bytes(
            buf,
            text_value(array, row).ok_or_else(unexpected)?.as_bytes(),
        )?,
        Encoder::Jsonb => {
            let text = text_value(array, row).ok_or_else(unexpected)?;
            let len =
                i32::try_from(text.len() + 1).map_err(|_| "a value over 2 GiB".to_string())?;
            buf.put_i32(len);
            buf.put_u8(1);
            buf.put_slice(text.as_bytes());
        }
        Encoder::Uuid => {
            let text = text_value(array, row).ok_or_else(unexpected)?;
            let uuid = uuid::Uuid::parse_str(text).map_err(|_| {
                format!(
                    "'{}' is not a UUID",
                    text.chars().take(60).collect::<String>()
                )
            })?;
            put_bytes(buf, uuid.as_bytes())?;
        }
        Encoder::Bytes => {
            let bytes = match array.data_type() {
                DataType::Binary => array.as_binary::<i32>().value(row),
                DataType::LargeBinary => array.as_binary::<i64>().value(row),
                _ => array.as_binary_view().value(row),
            };
            put_bytes(buf, bytes)?;
        }
        Encoder::Date => {
            let days = match array.data_type() {
                DataType::Date32 => array.as_primitive::<Date32Type>().value(row),
                _ => (array.as_primitive::<Date64Type>().value(row) / 86_400_000) as i32,
            };
            buf.put_i32(4);
            buf.put_i32(days - PG_EPOCH_DAYS);
        }
        Encoder::Time => {
            let micros = match array.data_type() {
                DataType::Time32(TimeUnit::Second) => {
                    array.as_primitive::<Time32SecondType>().value(row) as i64 * 1_000_000
                }
                DataType::Time32(_) => {
                    array.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1000
                }
                DataType::Time64(TimeUnit::Microsecond) => {
                    array.as_primitive::<Time64MicrosecondType>().value(row)
                }
                _ => array.as_primitive::<Time64NanosecondType>().value(row) / 1000,
            };
            buf.put_i32(8);
            buf.put_i64(micros);
        }
        Encoder::Timestamp => {
            let micros = match array.data_type() {
                DataType::Timestamp(TimeUnit::Second, _) => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .checked_mul(1_000_000),
                DataType::Timestamp(TimeUnit::Millisecond, _) => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .checked_mul(1000),
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    Some(array.as_primitive::<TimestampMicrosecondType>().value(row))
                }
                _ => Some(
                    array
                        .as_primitive::<TimestampNanosecondType>()
                        .value(row)
                        .div_euclid(1000),
                ),
            }
            .and_then(|m| m.checked_sub(PG_EPOCH_MICROS))
            .ok_or("a timestamp out of PostgreSQL's range")?;
            buf.put_i32(8);
            buf.put_i64(micros);
        }
        Encoder::Array { item, element } => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                DataType::LargeList(_) => array.as_list::<i64>().value(row),
                _ => return Err(unexpected()),
            };
            put_array(buf, &items, item, *element)?;
        }
    }
    Ok(())
}

/// `items` as a binary one-dimensional array (an empty one has no dimension), its length
/// first.
fn put_array(
    buf: &mut BytesMut,
    items: &ArrayRef,
    item: &Encoder,
    element: u32,
) -> Result<(), String> {
    let start = buf.len();
    buf.put_i32(0); // the length, set below
    let dims = i32::from(!items.is_empty());
    buf.put_i32(dims);
    buf.put_i32(i32::from(items.null_count() > 0));
    buf.put_u32(element);
    if dims == 1 {
        let n = i32::try_from(items.len()).map_err(|_| "a list of over 2^31 items".to_string())?;
        buf.put_i32(n);
        buf.put_i32(1); // the lower bound
        for i in 0..items.len() {
            if items.is_null(i) {
                buf.put_i32(-1);
            } else {
                value(items, item, i, buf)?;
            }
        }
    }
    let len = i32::try_from(buf.len() - start - 4).map_err(|_| "a value over 2 GiB".to_string())?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A float as a binary `numeric` holding its shortest decimal form (the digits Rust prints,
/// which read back as the same float); NaN and the infinities as PostgreSQL's own.
fn put_float_numeric(buf: &mut BytesMut, v: f64) -> Result<(), String> {
    let special = |sign: u16, buf: &mut BytesMut| {
        buf.put_i32(8);
        buf.put_i16(0);
        buf.put_i16(0);
        buf.put_u16(sign);
        buf.put_u16(0);
    };
    if v.is_nan() {
        special(0xC000, buf);
        return Ok(());
    }
    if v.is_infinite() {
        special(if v > 0.0 { 0xD000 } else { 0xF000 }, buf);
        return Ok(());
    }
    // Rust's `{}` prints a float's shortest round-trip digits, never with an exponent.
    let text = format!("{v}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let negative = int.starts_with('-');
    let digits = format!("{}{frac}", int.trim_start_matches('-'));
    let scale = frac.len();
    if scale > i8::MAX as usize || digits.len() > 38 {
        return Err(format!(
            "{v} has more digits than a numeric sluice writes (38)"
        ));
    }
    let unscaled: i128 = digits
        .parse()
        .map_err(|_| format!("{v} is not a number sluice can write as numeric"))?;
    put_numeric(
        buf,
        if negative { -unscaled } else { unscaled },
        scale as i8,
    );
    Ok(())
}

/// `unscaled` × 10^-`scale` as a binary `numeric`.
fn put_numeric(buf: &mut BytesMut, unscaled: i128, scale: i8) {
    let negative = unscaled < 0;
    let mut v = unscaled.unsigned_abs();
    let mut scale = scale as i32;
    if scale < 0 {
        v *= 10u128.pow((-scale) as u32);
        scale = 0;
    }
    // Align the point on a base-10000 digit: pad the fraction to a multiple of 4 digits.
    let frac_groups = (scale + 3) / 4;
    v *= 10u128.pow((frac_groups * 4 - scale) as u32);
    let mut groups = Vec::new();
    while v > 0 {
        groups.push((v % 10_000) as u16);
        v /= 10_000;
    }
    // groups[0] is the last fractional (or units) digit; weight of the first (most
    // significant) digit is its position above the point.
    let total = groups.len() as i32;
    let mut weight = total - frac_groups - 1;
    groups.reverse();
    // Leading zero digits (a value below 1 has none left after the loop) and trailing ones.
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let len = 8 + 2 * groups.len();
    buf.put_i32(len as i32);
    buf.put_i16(groups.len() as i16);
    buf.put_i16(weight as i16);
    buf.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    buf.put_u16(scale as u16);
    for g in groups {
        buf.put_u16(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn numeric(unscaled: i128, scale: i8) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_numeric(&mut b, unscaled, scale);
        b.to_vec()
    }

    #[test]
    fn decimals_become_numerics_that_read_back() {
        // The reader's decoder is the independent check.
        for (v, p, s) in [
            (12_345_678i128, 12u8, 3i8),
            (-12_345_678, 12, 3),
            (5, 10, 4),
            (0, 5, 2),
            (100_000_000, 20, 0),
            (1, 38, 10),
            (-99_999_999_999_999_999_999_999_999_999_999_999, 38, 2),
        ] {
            let raw = numeric(v, s);
            let back = super::super::types::numeric_value(&raw[4..], p, s);
            assert_eq!(back, Ok(v), "{v} scale {s}");
        }
    }

    #[test]
    fn floats_become_numerics_of_their_shortest_digits() {
        for (v, unscaled, scale) in [
            (12.34, 1234i128, 2i8),
            (-0.5, -5, 1),
            (3.0, 3, 0),
            (1e-7, 1, 7),
        ] {
            let mut b = BytesMut::new();
            put_float_numeric(&mut b, v).expect("fits");
            let back = super::super::types::numeric_value(&b[4..], 38, scale);
            assert_eq!(back, Ok(unscaled), "{v}");
        }
        let mut b = BytesMut::new();
        put_float_numeric(&mut b, f64::NAN).expect("nan");
        assert!(super::super::types::numeric_value(&b[4..], 38, 0)
            .expect_err("NaN")
            .contains("NaN"));
    }

    #[test]
    fn types_that_do_not_fit_are_named() {
        let err =
            Encoder::for_column("x", &DataType::Utf8, &Type::INT4).expect_err("text into int");
        assert!(
            err.contains("column 'x' is Utf8 here but int4 in the table"),
            "{err}"
        );
        assert_eq!(
            Encoder::for_column("x", &DataType::Int64, &Type::INT4),
            Ok(Encoder::Int(4))
        );
        let list = |dt: DataType| DataType::List(std::sync::Arc::new(Field::new("item", dt, true)));
        assert_eq!(
            Encoder::for_column("x", &list(DataType::Int64), &Type::INT8_ARRAY),
            Ok(Encoder::Array {
                item: Box::new(Encoder::Int(8)),
                element: Type::INT8.oid()
            })
        );
        let err = Encoder::for_column("x", &list(DataType::Utf8), &Type::INT4_ARRAY)
            .expect_err("text items into int4[]");
        assert!(err.contains("cast its items"), "{err}");
        assert_eq!(
            create_type(&list(DataType::Utf8)).as_deref(),
            Some("text[]")
        );
        assert_eq!(create_type(&list(list(DataType::Int32))), None);
    }
}
