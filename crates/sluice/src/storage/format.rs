//! Input formats, compression, and the read options a user can set.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A file format sluice reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma- (or otherwise-) separated values.
    Csv,
    /// Newline-delimited JSON (`.ndjson`, `.jsonl`, `.json`).
    #[serde(alias = "json", alias = "jsonl")]
    Ndjson,
    /// Apache Parquet.
    Parquet,
    /// Apache ORC (read only).
    Orc,
}

impl Format {
    /// The format named by a path's extension (after any compression extension).
    pub fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        let stem = Compression::strip_ext(&lower);
        let ext = stem.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "json" | "ndjson" | "jsonl" => Some(Format::Ndjson),
            "parquet" | "pq" | "parq" => Some(Format::Parquet),
            "orc" => Some(Format::Orc),
            _ => None,
        }
    }

    /// True for text formats, where any value can widen to a string.
    pub fn is_text(self) -> bool {
        matches!(self, Format::Csv | Format::Ndjson)
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
            Format::Orc => "orc",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Ok(Format::Csv),
            "ndjson" | "json" | "jsonl" => Ok(Format::Ndjson),
            "parquet" => Ok(Format::Parquet),
            "orc" => Ok(Format::Orc),
            other => Err(Error::Config(format!(
                "unknown format '{other}' (expected csv, ndjson, parquet or orc)"
            ))),
        }
    }
}

/// Whole-file compression of a text input, told by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    /// `.gz`
    Gzip,
    /// `.zst`
    Zstd,
    /// `.bz2`
    Bzip2,
    /// `.xz`
    Xz,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        })
    }
}

impl Compression {
    const EXTS: [(&'static str, Compression); 5] = [
        (".gz", Compression::Gzip),
        (".zst", Compression::Zstd),
        (".zstd", Compression::Zstd),
        (".bz2", Compression::Bzip2),
        (".xz", Compression::Xz),
    ];

    /// The compression named by a path's last extension.
    pub fn from_path(path: &str) -> Compression {
        let lower = path.to_ascii_lowercase();
        Self::EXTS
            .iter()
            .find(|(ext, _)| lower.ends_with(ext))
            .map(|(_, c)| *c)
            .unwrap_or(Compression::None)
    }

    fn strip_ext(path: &str) -> &str {
        Self::EXTS
            .iter()
            .find_map(|(ext, _)| path.strip_suffix(ext))
            .unwrap_or(path)
    }

    /// The DataFusion compression type for this compression.
    pub fn to_datafusion(
        self,
    ) -> datafusion::datasource::file_format::file_compression_type::FileCompressionType {
        use datafusion::datasource::file_format::file_compression_type::FileCompressionType as F;
        match self {
            Compression::None => F::UNCOMPRESSED,
            Compression::Gzip => F::GZIP,
            Compression::Zstd => F::ZSTD,
            Compression::Bzip2 => F::BZIP2,
            Compression::Xz => F::XZ,
        }
    }
}

/// Whether quoted CSV values may contain line breaks (which decides if big files can be split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewlinesInValues {
    /// Scan each large uncompressed file for a line break inside quotes before splitting it.
    #[default]
    Auto,
    /// Values may contain line breaks: never split CSV files.
    Yes,
    /// Values never contain line breaks: split without scanning.
    No,
}

impl FromStr for NewlinesInValues {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(NewlinesInValues::Auto),
            "true" | "yes" => Ok(NewlinesInValues::Yes),
            "false" | "no" => Ok(NewlinesInValues::No),
            other => Err(Error::Config(format!(
                "newlines-in-values must be auto, true or false, not '{other}'"
            ))),
        }
    }
}

/// CSV dialect options (named like the CLI flags and pipeline keys). Each one that is
/// `None` is detected per file (`source::dialect`) unless `detect` is off, when the
/// defaults hold: a header, `,` (tab for `.tsv`), `"`, no escape, no comment, no lines
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The first line (after the skipped ones) is a header.
    pub header: Option<bool>,
    /// Field delimiter.
    pub delimiter: Option<u8>,
    /// Quote character.
    pub quote: Option<u8>,
    /// Escape character inside quotes (none: a doubled quote escapes a quote).
    pub escape: Option<u8>,
    /// Lines starting with this byte are skipped.
    pub comment: Option<u8>,
    /// Lines before the header (a title, notes).
    pub skip_rows: Option<usize>,
    /// Detect what is not given, per file (false: the defaults).
    pub detect: bool,
    /// A value read as NULL (besides the empty field).
    pub null_value: Option<String>,
    /// How to treat line breaks inside quoted values.
    pub newlines_in_values: NewlinesInValues,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: None,
            delimiter: None,
            quote: None,
            escape: None,
            comment: None,
            skip_rows: None,
            detect: true,
            null_value: None,
            newlines_in_values: NewlinesInValues::Auto,
        }
    }
}

impl CsvOptions {
    /// The dialect of file `path` without detection: what is given, else the defaults (its
    /// delimiter by [`CsvOptions::delimiter_for`]).
    pub fn rules_for(&self, path: &str) -> CsvRules {
        CsvRules {
            delimiter: self.delimiter_for(path),
            quote: self.quote.unwrap_or(b'"'),
            escape: self.escape,
            comment: self.comment,
        }
    }

    /// Whether files have a header when nothing detects it.
    pub fn header_or_default(&self) -> bool {
        self.header.unwrap_or(true)
    }

    /// The delimiter for a given file: the configured one, or tab for `.tsv`, or comma.
    pub fn delimiter_for(&self, path: &str) -> u8 {
        self.delimiter.unwrap_or_else(|| {
            let lower = path.to_ascii_lowercase();
            if Compression::strip_ext(&lower).ends_with(".tsv") {
                b'\t'
            } else {
                b','
            }
        })
    }
}

/// A CSV dialect as csv-core (the parser under arrow's CSV decoder) reads it: one value
/// shared by the scan, its record framer, the byte-range splitter and the schema sampler,
/// so they all agree on where records and fields end. A doubled quote is a quote unless an
/// escape character is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CsvRules {
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
    /// Escape character inside quotes.
    pub escape: Option<u8>,
    /// Comment prefix.
    pub comment: Option<u8>,
}

impl CsvRules {
    /// A csv-core reader of this dialect.
    pub fn csv_core(&self) -> csv_core::Reader {
        csv_core::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .escape(self.escape)
            .double_quote(self.escape.is_none())
            .comment(self.comment)
            .build()
    }

    /// Arrow's CSV reader builder `b` set to this dialect.
    pub fn arrow(
        &self,
        b: datafusion::arrow::csv::ReaderBuilder,
    ) -> datafusion::arrow::csv::ReaderBuilder {
        let mut b = b.with_delimiter(self.delimiter).with_quote(self.quote);
        if let Some(e) = self.escape {
            b = b.with_escape(e);
        }
        if let Some(c) = self.comment {
            b = b.with_comment(c);
        }
        b
    }
}

/// Parses a one-character option such as a delimiter (`,`, `\t`, `tab`, `|`).
pub fn parse_char_option(name: &str, value: &str) -> Result<u8, Error> {
    let byte = match value {
        "\\t" | "tab" | "\t" => b'\t',
        "\\n" => b'\n',
        s if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        other => {
            return Err(Error::Config(format!(
                "{name} must be one ASCII character, not '{other}'"
            )))
        }
    };
    Ok(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extensions() {
        assert_eq!(Format::from_path("a/b.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("a/b.csv.gz"), Some(Format::Csv));
        assert_eq!(Format::from_path("b.jsonl.zst"), Some(Format::Ndjson));
        assert_eq!(Format::from_path("b.parquet"), Some(Format::Parquet));
        assert_eq!(Format::from_path("b.orc"), Some(Format::Orc));
        assert_eq!(Format::from_path("b.gz"), None);
        assert_eq!(Format::from_path("README"), None);
        assert_eq!(Compression::from_path("x.csv.bz2"), Compression::Bzip2);
        assert_eq!(Compression::from_path("x.csv"), Compression::None);
    }

    #[test]
    fn tsv_defaults_to_tab() {
        let o = CsvOptions::default();
        assert_eq!(o.delimiter_for("x.tsv.gz"), b'\t');
        assert_eq!(o.delimiter_for("x.csv"), b',');
    }

    #[test]
    fn char_options() {
        assert_eq!(parse_char_option("delimiter", "\\t").ok(), Some(b'\t'));
        assert_eq!(parse_char_option("delimiter", "|").ok(), Some(b'|'));
        assert!(parse_char_option("delimiter", "ab").is_err());
    }
}
