//! Resolving user inputs (files, directories, globs) into a de-duplicated list of files.
//!
//! Directories are walked recursively. Like Spark, entries whose name starts with `.` or `_`
//! are skipped below a directory or glob root (`_SUCCESS`, `.crc` files, `_temporary/`),
//! but a file the user names explicitly is always read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::storage::format::{Compression, Format};

/// One input file, resolved and sized.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// The path as shown to the user (and written into `--file-column`).
    pub display: String,
    /// The absolute local path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// The data format of the file.
    pub format: Format,
    /// The compression of the file, from its extension.
    pub compression: Compression,
    /// Hive-style `key=value` folders between the input root and the file
    /// (`None` for `__HIVE_DEFAULT_PARTITION__`), percent-decoded.
    pub partitions: Vec<(String, Option<String>)>,
    /// The object store holding it: `file:///` for local files, else `scheme://bucket`.
    pub store: String,
    /// Its key in a remote store (`None` for local files).
    pub key: Option<datafusion::object_store::path::Path>,
}

impl InputFile {
    /// True for files on a remote object store.
    pub fn is_remote(&self) -> bool {
        self.key.is_some()
    }
}

/// The store name of local files.
pub const LOCAL_STORE: &str = "file:///";

/// Characters that make an input a glob pattern.
const GLOB_CHARS: &[char] = &['*', '?', '['];

/// Returns true when the input should be treated as a glob pattern.
pub fn is_glob(input: &str) -> bool {
    input.contains(GLOB_CHARS)
}

/// Resolves inputs into files.
///
/// `format` forces the format of every file (`--format-in`); otherwise each file's format comes
/// from its extension, and files inside directories whose extension names no known format are
/// skipped (and returned in the second list so the caller can say so).
pub fn resolve_inputs(
    inputs: &[String],
    format: Option<Format>,
) -> Result<(Vec<InputFile>, Vec<String>)> {
    let (files, skipped, missing) = resolve_inputs_tolerant(inputs, format, false, false, false)?;
    debug_assert!(missing.is_empty());
    Ok((files, skipped))
}

/// [`resolve_inputs`], but with `tolerate_missing` a path that does not exist is returned in
/// the third list instead of failing. A glob that matches nothing is an error unless
/// `allow_empty`.
pub fn resolve_inputs_tolerant(
    inputs: &[String],
    format: Option<Format>,
    tolerate_missing: bool,
    allow_empty: bool,
    follow_symlinks: bool,
) -> Result<(Vec<InputFile>, Vec<String>, Vec<String>)> {
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for input in inputs {
        let mut found = Vec::new();
        // A path holding `*?[` is a glob, unless it names an existing file or folder as
        // written (`a[1].csv` is a file name as often as a pattern).
        if is_glob(input) && std::fs::symlink_metadata(input).is_err() {
            expand_glob(input, format, follow_symlinks, &mut found, &mut skipped)?;
        } else {
            let path = Path::new(input);
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tolerate_missing => {
                    missing.push(input.clone());
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(input.clone()))
                }
                Err(e) => return Err(Error::io(input.clone(), e)),
            };
            if meta.is_dir() {
                walk_dir(path, follow_symlinks, &mut found, &mut skipped)?;
            } else {
                // Explicitly named: never skipped, and its format must be known.
                let (fmt, compression) = detect(input, format)?;
                found.push((
                    path.to_path_buf(),
                    input.clone(),
                    Some((fmt, compression)),
                    Vec::new(),
                ));
            }
        }
        let mut matched = 0usize;
        for (path, display, detected, partitions) in found {
            let (fmt, compression) = match detected {
                Some(d) => d,
                None => match detect(&display, format) {
                    Ok(d) => d,
                    Err(_) => {
                        skipped.push(display);
                        continue;
                    }
                },
            };
            matched += 1;
            let canonical = std::fs::canonicalize(&path).map_err(|e| Error::io(&display, e))?;
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let size = std::fs::metadata(&canonical)
                .map_err(|e| Error::io(&display, e))?
                .len();
            files.push(InputFile {
                display,
                path: canonical,
                size,
                format: fmt,
                compression,
                partitions,
                store: LOCAL_STORE.to_string(),
                key: None,
            });
        }
        if matched == 0 && !allow_empty {
            return Err(Error::NoMatch(input.clone()));
        }
    }
    Ok((files, skipped, missing))
}

/// (path, display, detected format, hive partitions)
type Found = Vec<(
    PathBuf,
    String,
    Option<(Format, Compression)>,
    Vec<(String, Option<String>)>,
)>;

fn detect(name: &str, forced: Option<Format>) -> Result<(Format, Compression)> {
    let compression = Compression::from_path(name);
    let fmt = match forced {
        Some(f) => f,
        None => Format::from_path(name).ok_or_else(|| Error::UnknownFormat(name.to_string()))?,
    };
    Ok((fmt, compression))
}

/// True for names Spark treats as hidden: `.foo`, `_SUCCESS`, `_temporary`.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name.starts_with('_')
}

/// Whether a listing may enter `entry`: a symbolic link whose target lies outside the
/// listed root is only followed with `follow` (else it is named in `outside`).
fn inside_root(
    entry: &walkdir::DirEntry,
    root: Option<&Path>,
    follow: bool,
    outside: &mut Vec<String>,
) -> bool {
    if follow || !entry.path_is_symlink() {
        return true;
    }
    let inside = match (root, std::fs::canonicalize(entry.path())) {
        (Some(root), Ok(target)) => target.starts_with(root),
        _ => false,
    };
    if !inside {
        outside.push(format!(
            "{} (a link out of the input folder; --follow-symlinks reads it)",
            entry.path().display()
        ));
    }
    inside
}

fn walk_dir(root: &Path, follow: bool, out: &mut Found, skipped: &mut Vec<String>) -> Result<()> {
    let canonical_root = std::fs::canonicalize(root).ok();
    // A sluice output folder: only the files its manifest lists are part of it.
    let trusted = std::fs::read(root.join(crate::storage::manifest::MANIFEST))
        .ok()
        .and_then(|b| crate::storage::manifest::manifest_paths(&b));
    let mut outside = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || (!is_hidden(e.file_name())
                    && inside_root(e, canonical_root.as_deref(), follow, &mut outside))
        });
    for entry in walker {
        // A link back to a folder above it: the loop is cut there, the rest is listed.
        if let Err(e) = &entry {
            if e.loop_ancestor().is_some() {
                continue;
            }
        }
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| root.display().to_string());
            Error::file(path, e)
        })?;
        if entry.file_type().is_file() {
            if let Some(list) = &trusted {
                let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
                if !list.contains(&rel.to_string_lossy().replace('\\', "/")) {
                    continue;
                }
            }
            let display = entry.path().display().to_string();
            let parts = hive_segments(root, entry.path());
            out.push((entry.path().to_path_buf(), display, None, parts));
        }
    }
    skipped.append(&mut outside);
    Ok(())
}

/// Splits a glob into the directory to walk (its literal prefix) and the matcher.
fn expand_glob(
    pattern: &str,
    forced: Option<Format>,
    follow: bool,
    out: &mut Found,
    skipped: &mut Vec<String>,
) -> Result<()> {
    let bad = |reason: String| Error::BadGlob {
        pattern: pattern.to_string(),
        reason,
    };
    let matcher: GlobMatcher = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| bad(e.kind().to_string()))?
        .compile_matcher();
    // The literal prefix: every component before the first one with a glob character.
    let mut base = PathBuf::new();
    for comp in Path::new(pattern).components() {
        let s = comp.as_os_str().to_string_lossy();
        if is_glob(&s) {
            break;
        }
        base.push(comp.as_os_str());
    }
    let walk_root = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.clone()
    };
    if !walk_root.is_dir() {
        return Ok(());
    }
    let strip_dot = base.as_os_str().is_empty();
    let canonical_root = std::fs::canonicalize(&walk_root).ok();
    let mut outside = Vec::new();
    let walker = WalkDir::new(&walk_root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || (!is_hidden(e.file_name())
                    && inside_root(e, canonical_root.as_deref(), follow, &mut outside))
        });
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            // Unreadable folders under a glob root are skipped, as `ls` would.
            Err(_) => continue,
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let candidate = if strip_dot {
            path.strip_prefix(".").unwrap_or(path)
        } else {
            path
        };
        if matcher.is_match(candidate) {
            // A file the glob names is asked for: an unknown format is an error, not a skip.
            let display = candidate.display().to_string();
            let detected = detect(&display, forced)?;
            let parts = hive_segments(&walk_root, path);
            out.push((path.to_path_buf(), display, Some(detected), parts));
        }
    }
    skipped.append(&mut outside);
    Ok(())
}

/// The `key=value` folders between `root` and `file`, percent-decoded.
fn hive_segments(root: &Path, file: &Path) -> Vec<(String, Option<String>)> {
    let Ok(rel) = file.strip_prefix(root) else {
        return Vec::new();
    };
    let Some(parent) = rel.parent() else {
        return Vec::new();
    };
    let segments: Vec<String> = parent
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    hive_pairs(segments.iter().map(String::as_str))
}

/// The `key=value` pairs among folder names, percent-decoded
/// (`__HIVE_DEFAULT_PARTITION__` is NULL).
pub(crate) fn hive_pairs<'a>(
    segments: impl Iterator<Item = &'a str>,
) -> Vec<(String, Option<String>)> {
    segments
        .filter_map(|s| {
            let (k, v) = s.split_once('=')?;
            if k.is_empty() {
                return None;
            }
            let v = (v != crate::storage::partition::DEFAULT_PARTITION).then(|| unescape(v));
            Some((unescape(k), v))
        })
        .collect()
}

/// Reverses Hive/Spark `%XX` escaping.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_folders_are_decoded() {
        let parts = hive_segments(
            Path::new("/out"),
            Path::new(
                "/out/country=DE/ts=2024-01-01 10%3A00/day=__HIVE_DEFAULT_PARTITION__/f.parquet",
            ),
        );
        assert_eq!(
            parts,
            vec![
                ("country".to_string(), Some("DE".to_string())),
                ("ts".to_string(), Some("2024-01-01 10:00".to_string())),
                ("day".to_string(), None),
            ]
        );
        assert_eq!(unescape("a%2Fb%"), "a/b%");
    }
}
