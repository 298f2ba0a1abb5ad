//! The `[[lookup]]` stage as written by the user.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::OneOrMany;
use crate::error::{Error, Result};

/// A broadcast lookup: a small table loaded once into memory and joined to every row by key
/// (`[[lookup]]` in a pipeline file).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    /// The stage's name: a table for later SQL steps and its name in the report.
    pub name: String,
    /// Files, folders or globs holding the table (CSV, NDJSON, Parquet, ORC).
    #[serde(deserialize_with = "one_or_many")]
    pub paths: Vec<String>,
    /// Force one format (default: from each file's extension).
    #[serde(default)]
    pub format: Option<String>,
    /// CSV delimiter of the lookup files.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// The join key: `"category"`, `{ left = "cat", right = "category" }`, or a list of
    /// either for a key of several columns.
    #[serde(deserialize_with = "keys")]
    pub on: Vec<KeyPair>,
    /// Columns of the lookup to bring (default: every column that is not a key).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Put this before the names of the brought columns.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `left` (default: every row stays) or `inner` (rows without a match are dropped).
    #[serde(default)]
    pub how: Option<String>,
    /// With `how = "left"`, a row without a match: `null` (default), `reject` (to the
    /// rejects dataset, with the key that missed) or `fail` (stop).
    #[serde(default)]
    pub on_missing: Option<String>,
    /// A key found twice in the lookup: `error` (default, naming the key), `first` or
    /// `last`.
    #[serde(default)]
    pub on_duplicate: Option<String>,
    /// With a `postgres://` path: the table to read (`SCHEMA.NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// With a `postgres://` path: the query to read, instead of a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Biggest lookup held in memory (default 1 GiB).
    #[serde(default)]
    pub max_lookup_bytes: Option<u64>,
    /// Options of remote object stores for `paths` (a pipeline file's `[storage]`; not part
    /// of the stage's own text: [`crate::stage_spec::StageSpec`] carries them beside it).
    #[serde(skip)]
    pub storage: crate::storage::stores::StorageOptions,
}

/// One key column: its name in the rows (`left`) and in the lookup (`right`). Written as
/// `{ left, right }` (which `on` reads back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Column of the rows.
    pub left: String,
    /// Column of the lookup.
    pub right: String,
}

impl KeyPair {
    /// The same name on both sides.
    pub fn same(name: &str) -> KeyPair {
        KeyPair {
            left: name.to_string(),
            right: name.to_string(),
        }
    }
}

impl Serialize for KeyPair {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut pair = s.serialize_struct("KeyPair", 2)?;
        pair.serialize_field("left", &self.left)?;
        pair.serialize_field("right", &self.right)?;
        pair.end()
    }
}

fn keys<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<KeyPair>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        left: String,
        right: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum One {
        Name(String),
        Pair(Pair),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(One),
        Many(Vec<One>),
    }
    let list = match Raw::deserialize(d)? {
        Raw::One(o) => vec![o],
        Raw::Many(v) => v,
    };
    if list.is_empty() {
        return Err(serde::de::Error::custom("`on` names no key column"));
    }
    Ok(list
        .into_iter()
        .map(|o| match o {
            One::Name(n) => KeyPair::same(&n),
            One::Pair(p) => KeyPair {
                left: p.left,
                right: p.right,
            },
        })
        .collect())
}

/// `left` or `inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Every row stays.
    Left,
    /// Rows without a match are dropped.
    Inner,
}

/// What a row without a match becomes (`how = "left"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    /// NULL columns.
    Null,
    /// The row goes to the rejects dataset.
    Reject,
    /// The job stops.
    Fail,
}

/// Which row of a duplicated key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// A duplicate key is an error naming it.
    Error,
    /// The first row read wins.
    First,
    /// The last row read wins.
    Last,
}

impl LookupSpec {
    /// The resolved modes.
    pub fn modes(&self) -> Result<(How, OnMissing, OnDuplicate)> {
        let how = match self.how.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("left") => How::Left,
            Some("inner") => How::Inner,
            Some(other) => {
                return Err(Error::Config(format!(
                    "lookup '{}': how must be left or inner, not '{other}'",
                    self.name
                )))
            }
        };
        let on_missing = match self
            .on_missing
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("null") => OnMissing::Null,
            Some("reject") => OnMissing::Reject,
            Some("fail") => OnMissing::Fail,
            Some(other) => {
                return Err(Error::Config(format!(
                    "lookup '{}': on_missing must be null, reject or fail, not '{other}'",
                    self.name
                )))
            }
        };
        if how == How::Inner && on_missing != OnMissing::Null {
            return Err(Error::Config(format!(
                "lookup '{}': on_missing applies to how = \"left\"; an inner lookup drops rows without a match",
                self.name
            )));
        }
        let on_duplicate = match self
            .on_duplicate
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("error") => OnDuplicate::Error,
            Some("first") => OnDuplicate::First,
            Some("last") => OnDuplicate::Last,
            Some(other) => {
                return Err(Error::Config(format!(
                    "lookup '{}': on_duplicate must be error, first or last, not '{other}'",
                    self.name
                )))
            }
        };
        Ok((how, on_missing, on_duplicate))
    }
}

/// `paths = "a.csv"` or a list, as in `[source]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}
