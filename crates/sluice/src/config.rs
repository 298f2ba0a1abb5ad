//! Value shapes shared by the pipeline file and the stage specs it holds.

use serde::Deserialize;

/// One value or a list of them (`paths = "a.csv"` or `paths = ["a.csv", "b/"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
