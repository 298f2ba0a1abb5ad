//! Hive-style partition folder names (`country=DE/year=2024/`), escaped the way Spark does.

use std::fmt::Write;

/// The folder name Spark and Hive use for a NULL or empty partition value.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Escapes a partition value for use as a path segment, as Spark's
/// `ExternalCatalogUtils.escapePathName` does: `/`, `=`, `%`, `:`, quotes, control characters
/// and a few others become `%XX`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let needs = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7f}'
                | '{'
                | '['
                | ']'
                | '^'
        ) || (c as u32) < 0x20;
        if needs {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// One `col=value` segment; `None` or empty values go to the default partition.
pub fn segment(column: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => format!("{}={}", escape_value(column), escape_value(v)),
        _ => format!("{}={}", escape_value(column), DEFAULT_PARTITION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_spark() {
        assert_eq!(escape_value("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(
            escape_value("2024-01-01 10:00:00"),
            "2024-01-01 10%3A00%3A00"
        );
        assert_eq!(escape_value("Zürich"), "Zürich");
        assert_eq!(segment("c", None), "c=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(segment("c", Some("")), "c=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(segment("c", Some("DE")), "c=DE");
    }
}
