//! Telling dates and timestamps apart from plain strings in JSON, where they are strings.
//!
//! CSV inference (arrow-csv) already recognises them; NDJSON inference (arrow-json) does not,
//! so a `ts` column would be a timestamp in CSV files but a string in JSON files. This module
//! samples the string columns of an NDJSON file and promotes those whose every value is a date
//! or timestamp, with the same shapes arrow-csv accepts.

use std::io::{BufRead, BufReader};

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::storage::format::Compression;

/// What a string value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `2024-01-31`
    Date,
    /// `2024-01-31 10:00:00`, `2024-01-31T10:00:00.123Z`, `2024-01-31T10:00+02:00`
    Timestamp,
    /// Anything else.
    Other,
}

fn digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

/// Classifies one string value.
pub fn shape(s: &str) -> Shape {
    let b = s.as_bytes();
    if b.len() < 10
        || !(digits(&b[0..4])
            && b[4] == b'-'
            && digits(&b[5..7])
            && b[7] == b'-'
            && digits(&b[8..10]))
    {
        return Shape::Other;
    }
    if b.len() == 10 {
        return Shape::Date;
    }
    if !(b[10] == b'T' || b[10] == b' ') || b.len() < 16 {
        return Shape::Other;
    }
    // hh:mm
    let t = &b[11..];
    if !(digits(&t[0..2]) && t[2] == b':' && digits(&t[3..5])) {
        return Shape::Other;
    }
    let mut rest = &t[5..];
    if rest.len() >= 3 && rest[0] == b':' && digits(&rest[1..3]) {
        rest = &rest[3..];
        if let Some(frac) = rest.strip_prefix(b".") {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return Shape::Other;
            }
            rest = &frac[n..];
        }
    }
    match rest {
        [] | [b'Z'] => Shape::Timestamp,
        [b'+' | b'-', tz @ ..] => {
            let ok = match tz {
                [h1, h2] => digits(&[*h1, *h2]),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => digits(&[*h1, *h2, *m1, *m2]),
                _ => false,
            };
            if ok {
                Shape::Timestamp
            } else {
                Shape::Other
            }
        }
        _ => Shape::Other,
    }
}

/// Promotes string columns of an NDJSON file's inferred schema to DATE or TIMESTAMP when every
/// sampled value has that shape. Unreadable samples leave the schema as it is.
pub fn refine_json_schema(
    src: &super::infer::SampleSource,
    compression: Compression,
    schema: &Schema,
    rows: usize,
) -> Schema {
    let candidates: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.data_type() == &DataType::Utf8)
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return schema.clone();
    }
    let Ok(file) = src.open() else {
        return schema.clone();
    };
    let Ok(reader) = compression.to_datafusion().convert_read(file) else {
        return schema.clone();
    };
    // Per candidate: None = no value seen yet, Some(shape) = the widest shape seen.
    let mut seen: Vec<Option<Shape>> = vec![None; candidates.len()];
    for line in BufReader::new(reader).lines().take(rows) {
        let Ok(line) = line else { break };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&line)
        else {
            continue;
        };
        for (slot, &i) in seen.iter_mut().zip(&candidates) {
            let Some(serde_json::Value::String(v)) = map.get(schema.field(i).name()) else {
                continue;
            };
            let s = shape(v);
            *slot = Some(match (*slot, s) {
                (_, Shape::Other) | (Some(Shape::Other), _) => Shape::Other,
                (Some(Shape::Timestamp), _) | (_, Shape::Timestamp) => Shape::Timestamp,
                _ => Shape::Date,
            });
        }
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (slot, &i) in seen.iter().zip(&candidates) {
        let dt = match slot {
            Some(Shape::Date) => DataType::Date32,
            Some(Shape::Timestamp) => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => continue,
        };
        fields[i] = Field::new(fields[i].name(), dt, true);
    }
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(shape("2024-01-31"), Shape::Date);
        assert_eq!(shape("2024-01-31 10:00:00"), Shape::Timestamp);
        assert_eq!(shape("2024-01-31T10:00"), Shape::Timestamp);
        assert_eq!(shape("2024-01-31T10:00:00.123456Z"), Shape::Timestamp);
        assert_eq!(shape("2024-01-31T10:00:00+02:00"), Shape::Timestamp);
        assert_eq!(shape("2024-01-31T10:00:00+0200"), Shape::Timestamp);
        assert_eq!(shape("2024-01-31 is a date"), Shape::Other);
        assert_eq!(shape("20240131"), Shape::Other);
        assert_eq!(shape("hello"), Shape::Other);
    }
}
