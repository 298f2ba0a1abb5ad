//! PostgreSQL's types as Arrow's, and their binary `COPY` form decoded into Arrow arrays.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | `smallint`, `integer`, `bigint`, `oid` | Int16, Int32, Int64, Int64 |
//! | `real`, `double precision` | Float32, Float64 |
//! | `numeric(p, s)` | Decimal128(p, s) |
//! | `numeric` (no precision) | Decimal128(38, 10), rounded half away from zero |
//! | `boolean` | Boolean |
//! | `text`, `varchar`, `char(n)`, `name`, `"char"`, enums, `json`, `jsonb`, `uuid` | Utf8 |
//! | `bytea` | Binary |
//! | `date` | Date32 |
//! | `time` | Time64(µs) |
//! | `timestamp`, `timestamptz` | Timestamp(µs), Timestamp(µs, UTC) |
//! | `interval` | Utf8, as an ISO 8601 duration (`P1Y2M3DT4H5M6.5S`: Parquet cannot hold Arrow's month-day-nano intervals) |
//! | one-dimensional arrays of the above | List |
//!
//! A value Arrow cannot hold (`NaN` or `Infinity` in a numeric, `infinity` as a date or
//! timestamp, a numeric too big for its decimal, a multi-dimensional array) makes its row a
//! bad row, named by column.

use std::sync::Arc;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit, DECIMAL128_MAX_PRECISION};
use tokio_postgres::types::{Kind as PgKind, Type};

/// Scale of an unconstrained `numeric`.
pub const FREE_NUMERIC_SCALE: i8 = 10;

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// How sluice reads one PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `oid`.
    Oid,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `boolean`.
    Bool,
    /// Text in any of its forms (the bytes are UTF-8).
    Text,
    /// `jsonb`: a version byte, then the text.
    Jsonb,
    /// `uuid`: 16 bytes, read as its canonical text.
    Uuid,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timestamp` (`utc`: `timestamptz`).
    Timestamp {
        /// With time zone: the value is UTC.
        utc: bool,
    },
    /// `interval`.
    Interval,
    /// `numeric` as a decimal of this precision and scale.
    Numeric {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// A one-dimensional array of `Kind`.
    List(Box<Kind>),
}

impl Kind {
    /// How to read column `column` of type `ty` (type modifier `typmod`): `Err` with what to
    /// do about a type sluice cannot read.
    pub fn of(column: &str, ty: &Type, typmod: i32) -> Result<Kind, String> {
        let kind = match *ty {
            Type::INT2 => Kind::Int2,
            Type::INT4 => Kind::Int4,
            Type::INT8 => Kind::Int8,
            Type::OID => Kind::Oid,
            Type::FLOAT4 => Kind::Float4,
            Type::FLOAT8 => Kind::Float8,
            Type::BOOL => Kind::Bool,
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::CHAR
            | Type::JSON
            | Type::UNKNOWN => Kind::Text,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::BYTEA => Kind::Bytea,
            Type::DATE => Kind::Date,
            Type::TIME => Kind::Time,
            Type::TIMESTAMP => Kind::Timestamp { utc: false },
            Type::TIMESTAMPTZ => Kind::Timestamp { utc: true },
            Type::INTERVAL => Kind::Interval,
            Type::NUMERIC => numeric(typmod),
            _ => match ty.kind() {
                PgKind::Enum(_) => Kind::Text,
                // An array column's type modifier is its elements' (`numeric(10,2)[]`).
                PgKind::Array(element) if !matches!(element.kind(), PgKind::Array(_)) => {
                    Kind::List(Box::new(Kind::of(column, element, typmod)?))
                }
                PgKind::Domain(base) => Kind::of(column, base, typmod)?,
                _ => {
                    return Err(format!(
                        "column '{column}' is {}, which sluice cannot read: read it with a \
                         --query that casts it, e.g. SELECT ..., \"{column}\"::text AS \"{column}\"",
                        ty.name()
                    ))
                }
            },
        };
        Ok(kind)
    }

    /// The Arrow type of a column of this kind.
    pub fn data_type(&self) -> DataType {
        match self {
            Kind::Int2 => DataType::Int16,
            Kind::Int4 => DataType::Int32,
            Kind::Int8 | Kind::Oid => DataType::Int64,
            Kind::Float4 => DataType::Float32,
            Kind::Float8 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Text | Kind::Jsonb | Kind::Uuid | Kind::Interval => DataType::Utf8,
            Kind::Bytea => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| Arc::from("UTC")))
            }
            Kind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::List(inner) => {
                DataType::List(Arc::new(Field::new_list_field(inner.data_type(), true)))
            }
        }
    }
}

/// `numeric(p, s)` as Decimal128(p, s); without a precision, Decimal128(38, 10).
fn numeric(typmod: i32) -> Kind {
    if typmod < 4 {
        return Kind::Numeric {
            precision: DECIMAL128_MAX_PRECISION,
            scale: FREE_NUMERIC_SCALE,
        };
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    // A negative scale (PostgreSQL 15) is stored as an 11-bit two's complement.
    let raw_scale = (typmod - 4) & 0x7ff;
    let scale = if raw_scale & 0x400 != 0 {
        raw_scale - 0x800
    } else {
        raw_scale
    };
    if precision as u8 > DECIMAL128_MAX_PRECISION || precision == 0 {
        return Kind::Numeric {
            precision: DECIMAL128_MAX_PRECISION,
            scale: FREE_NUMERIC_SCALE,
        };
    }
    Kind::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    }
}

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    String(String),
    Bytes(&'a [u8]),
    Decimal(i128),
}

fn take<const N: usize>(raw: &[u8], what: &str) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{what} of {} bytes, not {N}", raw.len()))
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("text that is not UTF-8 ({e})"))
}

/// `raw` (a value in PostgreSQL's binary form) as a value of `kind`.
fn decode<'a>(kind: &Kind, raw: &'a [u8]) -> Result<Value<'a>, String> {
    Ok(match kind {
        Kind::Int2 => Value::I16(i16::from_be_bytes(take(raw, "smallint")?)),
        Kind::Int4 => Value::I32(i32::from_be_bytes(take(raw, "integer")?)),
        Kind::Int8 => Value::I64(i64::from_be_bytes(take(raw, "bigint")?)),
        Kind::Oid => Value::I64(u32::from_be_bytes(take(raw, "oid")?) as i64),
        Kind::Float4 => Value::F32(f32::from_be_bytes(take(raw, "real")?)),
        Kind::Float8 => Value::F64(f64::from_be_bytes(take(raw, "double")?)),
        Kind::Bool => Value::Bool(take::<1>(raw, "boolean")?[0] != 0),
        Kind::Text => Value::Str(utf8(raw)?),
        Kind::Jsonb => match raw.split_first() {
            Some((1, text)) => Value::Str(utf8(text)?),
            _ => return Err("jsonb of an unknown version".into()),
        },
        Kind::Uuid => Value::String(
            uuid::Uuid::from_bytes(take(raw, "uuid")?)
                .hyphenated()
                .to_string(),
        ),
        Kind::Bytea => Value::Bytes(raw),
        Kind::Date => match i32::from_be_bytes(take(raw, "date")?) {
            i32::MAX | i32::MIN => {
                return Err("the date is infinity, which Arrow cannot hold".into())
            }
            days => Value::I32(
                days.checked_add(PG_EPOCH_DAYS)
                    .ok_or("the date is out of Arrow's range")?,
            ),
        },
        Kind::Time => Value::I64(i64::from_be_bytes(take(raw, "time")?)),
        Kind::Timestamp { .. } => match i64::from_be_bytes(take(raw, "timestamp")?) {
            i64::MAX | i64::MIN => {
                return Err("the timestamp is infinity, which Arrow cannot hold".into())
            }
            micros => Value::I64(
                micros
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or("the timestamp is out of Arrow's range")?,
            ),
        },
        Kind::Interval => {
            let raw: [u8; 16] = take(raw, "interval")?;
            let micros = i64::from_be_bytes(raw[0..8].try_into().unwrap_or_default());
            let days = i32::from_be_bytes(raw[8..12].try_into().unwrap_or_default());
            let months = i32::from_be_bytes(raw[12..16].try_into().unwrap_or_default());
            Value::String(iso_duration(months, days, micros))
        }
        Kind::Numeric { precision, scale } => {
            Value::Decimal(numeric_value(raw, *precision, *scale)?)
        }
        Kind::List(_) => return Err("an array inside an array".into()),
    })
}

/// An interval as an ISO 8601 duration: `P1Y2M3DT4H5M6.5S`, `PT0S` for zero; each part
/// keeps its own sign, as PostgreSQL's `iso_8601` style writes them.
fn iso_duration(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [
        (years as i64, 'Y'),
        (months as i64, 'M'),
        (days as i64, 'D'),
    ] {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if micros != 0 {
        out.push('T');
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let (hours, minutes) = (m / 3_600_000_000, m / 60_000_000 % 60);
        let (secs, frac) = (m / 1_000_000 % 60, m % 1_000_000);
        if hours != 0 {
            out.push_str(&format!("{sign}{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{sign}{minutes}M"));
        }
        if secs != 0 || frac != 0 {
            let frac = if frac == 0 {
                String::new()
            } else {
                format!(".{frac:06}").trim_end_matches('0').to_string()
            };
            out.push_str(&format!("{sign}{secs}{frac}S"));
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// A binary `numeric` as the unscaled value of a Decimal128(`precision`, `scale`), rounded
/// half away from zero when it has more decimals.
pub(crate) fn numeric_value(raw: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a numeric cut short".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("the numeric is NaN, which a decimal cannot hold".into()),
        _ => return Err("the numeric is infinite, which a decimal cannot hold".into()),
    }
    // value = sum(d[i] * 10000^(weight - i)); unscaled = value * 10^scale.
    let scale = scale as i32;
    let mut unscaled: i128 = 0;
    // The first digit dropped beyond the scale decides the rounding.
    let mut round_up = false;
    let too_big = || format!("the numeric does not fit a decimal({precision}, {scale})");
    for i in 0..ndigits {
        let digit = word(4 + i)? as i128;
        let exp = 4 * (weight - i as i32) + scale;
        if exp >= 0 {
            let factor = 10i128.checked_pow(exp as u32).ok_or_else(too_big)?;
            unscaled = digit
                .checked_mul(factor)
                .and_then(|d| unscaled.checked_add(d))
                .ok_or_else(too_big)?;
        } else if exp > -4 {
            // Part of this base-10000 digit is kept, the rest decides the rounding.
            let div = 10i128.pow((-exp) as u32);
            unscaled = unscaled.checked_add(digit / div).ok_or_else(too_big)?;
            round_up |= (digit % div) * 2 >= div;
            break;
        } else {
            if exp == -4 {
                round_up |= digit >= 5000;
            }
            break;
        }
    }
    if round_up {
        unscaled = unscaled.checked_add(1).ok_or_else(too_big)?;
    }
    if unscaled >= 10i128.pow(precision as u32) {
        return Err(too_big());
    }
    Ok(if sign == 0x4000 { -unscaled } else { unscaled })
}

/// The values of one column of a batch, as they are read.
pub struct Column {
    kind: Kind,
    builder: Builder,
}

enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder),
    List {
        values: Box<Column>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl Column {
    /// An empty column of `kind`, with room for `rows`.
    pub fn new(kind: &Kind, rows: usize) -> Column {
        let builder = match kind {
            Kind::Int2 => Builder::I16(Int16Builder::with_capacity(rows)),
            Kind::Int4 => Builder::I32(Int32Builder::with_capacity(rows)),
            Kind::Int8 | Kind::Oid => Builder::I64(Int64Builder::with_capacity(rows)),
            Kind::Float4 => Builder::F32(Float32Builder::with_capacity(rows)),
            Kind::Float8 => Builder::F64(Float64Builder::with_capacity(rows)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Text | Kind::Jsonb | Kind::Uuid | Kind::Interval => {
                Builder::Str(StringBuilder::with_capacity(rows, rows * 16))
            }
            Kind::Bytea => Builder::Bytes(BinaryBuilder::with_capacity(rows, rows * 16)),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(rows)),
            Kind::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(rows)),
            Kind::Timestamp { utc } => {
                let b = TimestampMicrosecondBuilder::with_capacity(rows);
                Builder::Timestamp(if *utc { b.with_timezone("UTC") } else { b })
            }
            Kind::Numeric { precision, scale } => Builder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(rows)),
            ),
            Kind::List(inner) => Builder::List {
                values: Box::new(Column::new(inner, rows)),
                offsets: {
                    let mut o = Vec::with_capacity(rows + 1);
                    o.push(0);
                    o
                },
                nulls: NullBufferBuilder::new(rows),
            },
        };
        Column {
            kind: kind.clone(),
            builder,
        }
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match &mut self.builder {
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends the value whose binary form is `raw` (`None`: NULL). On `Err` (what is wrong
    /// with the value) nothing was appended.
    pub fn push(&mut self, raw: Option<&[u8]>) -> Result<(), String> {
        let Some(raw) = raw else {
            self.push_null();
            return Ok(());
        };
        if let Kind::List(inner) = &self.kind {
            let elements = array_elements(raw, inner)?;
            let Builder::List {
                values,
                offsets,
                nulls,
            } = &mut self.builder
            else {
                return Err("a list column without its list builder".into());
            };
            for e in &elements {
                match e {
                    Some(v) => values.append(v.clone()),
                    None => values.push_null(),
                }
            }
            let last = offsets.last().copied().unwrap_or(0);
            let next = i32::try_from(elements.len())
                .ok()
                .and_then(|n| last.checked_add(n))
                .ok_or("the array has too many elements for one batch")?;
            offsets.push(next);
            nulls.append_non_null();
            return Ok(());
        }
        let value = decode(&self.kind, raw)?;
        self.append(value);
        Ok(())
    }

    fn append(&mut self, value: Value<'_>) {
        match (&mut self.builder, value) {
            (Builder::I16(b), Value::I16(v)) => b.append_value(v),
            (Builder::I32(b), Value::I32(v)) => b.append_value(v),
            (Builder::Date(b), Value::I32(v)) => b.append_value(v),
            (Builder::I64(b), Value::I64(v)) => b.append_value(v),
            (Builder::Time(b), Value::I64(v)) => b.append_value(v),
            (Builder::Timestamp(b), Value::I64(v)) => b.append_value(v),
            (Builder::F32(b), Value::F32(v)) => b.append_value(v),
            (Builder::F64(b), Value::F64(v)) => b.append_value(v),
            (Builder::Bool(b), Value::Bool(v)) => b.append_value(v),
            (Builder::Str(b), Value::Str(v)) => b.append_value(v),
            (Builder::Str(b), Value::String(v)) => b.append_value(v),
            (Builder::Bytes(b), Value::Bytes(v)) => b.append_value(v),
            (Builder::Decimal(b), Value::Decimal(v)) => b.append_value(v),
            // `decode` gives each kind its own value: nothing else reaches here.
            _ => self.push_null(),
        }
    }

    /// The column's values so far, as an array; the column starts again empty.
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.builder {
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::List {
                values,
                offsets,
                nulls,
            } => {
                let kind = match &self.kind {
                    Kind::List(inner) => inner.as_ref().clone(),
                    other => other.clone(),
                };
                let field = Arc::new(Field::new_list_field(kind.data_type(), true));
                let taken = std::mem::replace(offsets, vec![0]);
                let array = ListArray::new(
                    field,
                    OffsetBuffer::new(taken.into()),
                    values.finish(),
                    nulls.finish(),
                );
                Arc::new(array)
            }
        }
    }

    /// Rows in the column so far.
    pub fn len(&self) -> usize {
        match &self.builder {
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Bool(b) => b.len(),
            Builder::Str(b) => b.len(),
            Builder::Bytes(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Time(b) => b.len(),
            Builder::Timestamp(b) => b.len(),
            Builder::Decimal(b) => b.len(),
            Builder::List { offsets, .. } => offsets.len() - 1,
        }
    }

    /// True when no row was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The elements of a one-dimensional binary array of `element` values.
fn array_elements<'a>(raw: &'a [u8], element: &Kind) -> Result<Vec<Option<Value<'a>>>, String> {
    let int = |at: usize| -> Result<i32, String> {
        raw.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "an array cut short".to_string())
    };
    let dims = int(0)?;
    if dims == 0 {
        return Ok(Vec::new());
    }
    if dims != 1 {
        return Err(format!(
            "a {dims}-dimensional array: sluice reads arrays of one dimension (cast it to text)"
        ));
    }
    let len = int(12)?;
    let mut at = 20;
    let mut out = Vec::with_capacity(len.max(0) as usize);
    for _ in 0..len {
        let n = int(at)?;
        at += 4;
        if n < 0 {
            out.push(None);
            continue;
        }
        let end = at + n as usize;
        let bytes = raw.get(at..end).ok_or("an array cut short")?;
        out.push(Some(decode(element, bytes)?));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_become_exact_decimals() {
        // 12345.678 = 1 2345 . 6780
        let raw = numeric_bytes(1, 0, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_value(&raw, 12, 3), Ok(12_345_678));
        assert_eq!(numeric_value(&raw, 12, 2), Ok(1_234_568), "rounded half up");
        let neg = numeric_bytes(1, 0x4000, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_value(&neg, 12, 3), Ok(-12_345_678));
        // 0.0005 -> scale 3 rounds to 0.001
        let small = numeric_bytes(-1, 0, 4, &[5]);
        assert_eq!(numeric_value(&small, 10, 3), Ok(1));
        assert_eq!(numeric_value(&small, 10, 4), Ok(5));
        // zero: no digits
        assert_eq!(numeric_value(&numeric_bytes(0, 0, 0, &[]), 5, 2), Ok(0));
        assert!(numeric_value(&raw, 5, 3)
            .expect_err("too big")
            .contains("does not fit"));
        assert!(numeric_value(&numeric_bytes(0, 0xC000, 0, &[]), 38, 10)
            .expect_err("nan")
            .contains("NaN"));
    }

    #[test]
    fn intervals_read_as_iso_durations() {
        assert_eq!(
            iso_duration(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(iso_duration(0, 0, 0), "PT0S");
        assert_eq!(iso_duration(0, -1, -90_000_000), "P-1DT-1M-30S");
    }

    #[test]
    fn typmods_give_precision_and_scale() {
        // numeric(12,2): ((12 << 16) | 2) + 4
        assert_eq!(
            numeric((12 << 16 | 2) + 4),
            Kind::Numeric {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            numeric(-1),
            Kind::Numeric {
                precision: 38,
                scale: FREE_NUMERIC_SCALE
            }
        );
    }

    #[test]
    fn a_bad_value_appends_nothing() {
        let mut c = Column::new(&Kind::Int4, 4);
        assert!(c.push(Some(&[0, 0, 1])).is_err());
        assert_eq!(c.len(), 0);
        c.push(Some(&7i32.to_be_bytes())).expect("int");
        c.push(None).expect("null");
        assert_eq!(c.finish().len(), 2);
    }

    #[test]
    fn arrays_become_lists() {
        let mut raw = Vec::new();
        for v in [1i32, 0, 23, 3, 1] {
            raw.extend(v.to_be_bytes());
        }
        for x in [Some(5i32), None, Some(-1)] {
            match x {
                Some(x) => {
                    raw.extend(4i32.to_be_bytes());
                    raw.extend(x.to_be_bytes());
                }
                None => raw.extend((-1i32).to_be_bytes()),
            }
        }
        let mut c = Column::new(&Kind::List(Box::new(Kind::Int4)), 2);
        c.push(Some(&raw)).expect("array");
        c.push(None).expect("null");
        let a = c.finish();
        let list = a.as_any().downcast_ref::<ListArray>().expect("a list");
        assert_eq!(list.len(), 2);
        assert_eq!(list.value(0).len(), 3);
        assert!(list.is_null(1));
    }
}
