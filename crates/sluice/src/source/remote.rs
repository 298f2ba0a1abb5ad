//! Inputs on object stores: `s3://`, `gs://`, `az://`/`abfss://` and `http(s)://` URLs.
//!
//! Stores come from [`crate::storage::stores`] (re-exported here); this module lists them: a
//! prefix ending in `/` (or naming no object) is a folder, listed recursively; a key with
//! `*?[` (naming no object or folder as written) is a glob over the listing of its literal
//! prefix; anything else is one object. Hidden names (`.x`, `_x`) below a listed folder are
//! skipped like local ones, and a folder holding a sluice `_SUCCESS` manifest yields only the
//! files that manifest lists.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use futures::StreamExt;
use globset::GlobBuilder;

use super::resolve::{is_glob, InputFile};
use crate::error::{Error, Result};
use crate::storage::format::{Compression, Format};

pub use crate::storage::stores::{
    build_store, ensure_store, is_remote, key_path, list_sorted, store_error, RemoteUrl,
    StorageOptions,
};

/// True when an object, or a folder of objects, exists under exactly the key of `url`.
async fn literal_exists(store: &Arc<dyn ObjectStore>, url: &RemoteUrl) -> Result<bool> {
    let key = url.key.trim_end_matches('/');
    if key.is_empty() {
        return Ok(false);
    }
    let path = key_path(url, key)?;
    if !url.key.ends_with('/') {
        match store.head(&path).await {
            Ok(_) => return Ok(true),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(&url.store, e)),
        }
    }
    if matches!(url.scheme(), "http" | "https") {
        return Ok(false);
    }
    let mut below = store.list(Some(&path));
    match below.next().await {
        Some(Ok(_)) => Ok(true),
        None => Ok(false),
        Some(Err(e)) => Err(store_error(&url.store, e)),
    }
}

/// Lists the files one remote input names. Missing objects go to the third list when
/// `tolerate_missing`; a glob matching nothing is an error unless `allow_empty`.
pub async fn resolve_remote(
    input: &str,
    url: &RemoteUrl,
    store: &Arc<dyn ObjectStore>,
    format: Option<Format>,
    tolerate_missing: bool,
    allow_empty: bool,
) -> Result<(Vec<InputFile>, Vec<String>, Vec<String>)> {
    let display = |key: &StorePath| format!("{}/{}", url.store, key);
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut missing = Vec::new();
    let detect = |name: &str| -> Option<(Format, Compression)> {
        let compression = Compression::from_path(name);
        let fmt = format.or_else(|| Format::from_path(name))?;
        Some((fmt, compression))
    };
    let make = |meta: &object_store::ObjectMeta, fc: (Format, Compression), root: &str| InputFile {
        display: display(&meta.location),
        path: std::path::PathBuf::from(display(&meta.location)),
        size: meta.size,
        format: fc.0,
        compression: fc.1,
        partitions: hive_of(root, meta.location.as_ref()),
        store: url.store.clone(),
        key: Some(meta.location.clone()),
    };
    // A key holding `*?[` is a glob, unless an object or folder exists under exactly that
    // key (`a[1].csv` is a file name as often as a pattern).
    if is_glob(&url.key) && !literal_exists(store, url).await? {
        let matcher = GlobBuilder::new(&url.key)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::BadGlob {
                pattern: input.to_string(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        let root: String = url
            .key
            .split('/')
            .take_while(|seg| !is_glob(seg))
            .collect::<Vec<_>>()
            .join("/");
        let listed = list_sorted(store, &root, input).await?;
        for meta in listed {
            let key = meta.location.as_ref();
            if !matcher.is_match(key) || hidden_below(&root, key) {
                continue;
            }
            let fc = detect(key).ok_or_else(|| Error::UnknownFormat(display(&meta.location)))?;
            files.push(make(&meta, fc, &root));
        }
        if files.is_empty() && !allow_empty {
            return Err(Error::NoMatch(input.to_string()));
        }
        return Ok((files, skipped, missing));
    }
    // One object?
    let key = url.key.trim_end_matches('/');
    if !url.key.ends_with('/') && !key.is_empty() {
        match store.head(&key_path(url, key)?).await {
            Ok(meta) => {
                let fc = detect(key).ok_or_else(|| Error::UnknownFormat(input.to_string()))?;
                let parent = key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                files.push(make(&meta, fc, parent));
                return Ok((files, skipped, missing));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(input, e)),
        }
    }
    if matches!(url.scheme(), "http" | "https") {
        return if tolerate_missing {
            missing.push(input.to_string());
            Ok((files, skipped, missing))
        } else {
            Err(Error::NotFound(input.to_string()))
        };
    }
    // A folder: everything below the prefix.
    let listed = list_sorted(store, key_path(url, key)?.as_ref(), input).await?;
    if listed.is_empty() {
        return if tolerate_missing {
            missing.push(input.to_string());
            Ok((files, skipped, missing))
        } else {
            Err(Error::NotFound(input.to_string()))
        };
    }
    let trusted = manifest_files(store, key).await;
    for meta in listed {
        let k = meta.location.as_ref();
        if hidden_below(key, k) {
            continue;
        }
        if let Some(list) = &trusted {
            let rel = k.strip_prefix(key).unwrap_or(k).trim_start_matches('/');
            if !list.contains(rel) {
                continue;
            }
        }
        match detect(k) {
            Some(fc) => files.push(make(&meta, fc, key)),
            None => skipped.push(display(&meta.location)),
        }
    }
    Ok((files, skipped, missing))
}

/// The files a sluice `_SUCCESS` manifest in folder `dir` lists, if it holds one.
async fn manifest_files(store: &Arc<dyn ObjectStore>, dir: &str) -> Option<HashSet<String>> {
    let path = if dir.is_empty() {
        StorePath::from(crate::storage::manifest::MANIFEST)
    } else {
        StorePath::parse(format!("{dir}/{}", crate::storage::manifest::MANIFEST)).ok()?
    };
    let bytes = store.get(&path).await.ok()?.bytes().await.ok()?;
    crate::storage::manifest::manifest_paths(&bytes)
}

/// True when a segment of `key` below `root` is hidden (`.x` or `_x`).
fn hidden_below(root: &str, key: &str) -> bool {
    let rel = key
        .strip_prefix(root)
        .unwrap_or(key)
        .trim_start_matches('/');
    rel.split('/')
        .any(|s| s.starts_with('.') || s.starts_with('_'))
}

/// Hive `key=value` folders between `root` and the object.
fn hive_of(root: &str, key: &str) -> Vec<(String, Option<String>)> {
    let rel = key
        .strip_prefix(root)
        .unwrap_or(key)
        .trim_start_matches('/');
    let Some((dirs, _)) = rel.rsplit_once('/') else {
        return Vec::new();
    };
    super::resolve::hive_pairs(dirs.split('/'))
}
