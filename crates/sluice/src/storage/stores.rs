//! Object stores: `s3://`, `gs://`, `az://`/`abfss://` and `http(s)://` URLs, built with
//! `object_store`'s builders from the standard places (environment variables such as
//! `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`; profile files and instance metadata
//! through the builders' credential chains) plus the user's storage options, and registered
//! on the session under `scheme://bucket`. Shared by the reads (`source/remote.rs`: listing,
//! globs), the lookups and the remote sink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::ObjectStore;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::counting::{CountingStore, ReadCounter};
use crate::error::{Error, Result};

/// Storage options (`--storage-option KEY=VALUE`, `[storage]`): endpoint, region,
/// credentials, `allow_http`, `virtual_hosted_style_request`, `skip_signature` (anonymous)...
/// — the keys of `object_store`'s builders.
pub type StorageOptions = BTreeMap<String, String>;

const SCHEMES: [&str; 11] = [
    "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

/// True when `input` is a URL of an object store sluice can read.
pub fn is_remote(input: &str) -> bool {
    input
        .split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// A parsed object-store URL: the store (`s3://bucket`) and the key within it.
#[derive(Debug, Clone)]
pub struct RemoteUrl {
    /// `scheme://authority`, the name the store is registered under.
    pub store: String,
    /// The key (or key pattern), without a leading `/`.
    pub key: String,
    url: url::Url,
}

impl RemoteUrl {
    /// Parses `s3://bucket/key`.
    pub fn parse(input: &str) -> Result<RemoteUrl> {
        let url = url::Url::parse(input)
            .map_err(|e| Error::Config(format!("'{input}' is not a valid URL: {e}")))?;
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(Error::Config(format!("'{input}' names no bucket or host"))),
        };
        // The key as written (the URL parser would percent-encode glob characters).
        let after = &input[input.find("://").map(|i| i + 3).unwrap_or(0)..];
        let key = after
            .split_once('/')
            .map(|(_, k)| k)
            .unwrap_or("")
            .to_string();
        Ok(RemoteUrl {
            store: format!("{}://{authority}", url.scheme()),
            key,
            url,
        })
    }

    /// The URL scheme (`s3`, `gs`, `az`, `https`...).
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }
}

/// Builds the store for `url` from the environment and `options`.
pub fn build_store(url: &RemoteUrl, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    use object_store::{ClientOptions, RetryConfig};
    let bad = |k: &str, e: String| Error::Config(format!("storage option '{k}': {e}"));
    // Transient errors are retried a few times, quickly: a dead endpoint fails in seconds.
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    };
    // Every cloud builder: from the environment, the URL, quick retries, then the options.
    macro_rules! cloud {
        ($builder:expr) => {{
            let mut b = $builder.with_retry(retry);
            for (k, v) in options {
                let key = k
                    .parse()
                    .map_err(|e: object_store::Error| bad(k, e.to_string()))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| store_error(&url.store, e))?)
        }};
    }
    let bucket = url.url.host_str().unwrap_or_default();
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            cloud!(object_store::aws::AmazonS3Builder::from_env().with_url(format!("s3://{bucket}")))
        }
        "gs" | "gcs" => cloud!(object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(format!("gs://{bucket}"))),
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            cloud!(object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.url.as_str()))
        }
        "http" | "https" => {
            // An http:// URL was written on purpose: plain HTTP is allowed for it.
            let mut client = ClientOptions::new().with_allow_http(url.scheme() == "http");
            for (k, v) in options {
                let key = k
                    .parse()
                    .map_err(|e: object_store::Error| bad(k, e.to_string()))?;
                client = client.with_config(key, v);
            }
            Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(url.store.clone())
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| store_error(&url.store, e))?,
            )
        }
        other => {
            return Err(Error::Config(format!(
                "unsupported storage scheme '{other}://'"
            )))
        }
    };
    Ok(store)
}

/// Registers the store of `input` on `ctx` (once), counting its reads into `counter`.
pub fn ensure_store(
    ctx: &SessionContext,
    input: &str,
    options: &StorageOptions,
    counter: Option<&Arc<ReadCounter>>,
) -> Result<(RemoteUrl, Arc<dyn ObjectStore>)> {
    let url = RemoteUrl::parse(input)?;
    let store_url = ObjectStoreUrl::parse(&url.store)?;
    if let Ok(store) = ctx.runtime_env().object_store(&store_url) {
        return Ok((url, store));
    }
    let store = build_store(&url, options)?;
    let store: Arc<dyn ObjectStore> = match counter {
        Some(c) => Arc::new(CountingStore::new(store, Arc::clone(c))),
        None => store,
    };
    ctx.register_object_store(store_url.as_ref(), Arc::clone(&store));
    Ok((url, store))
}

/// A clear message for an object-store error on `what`.
pub fn store_error(what: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let detail = crate::error::with_sources(&e);
    let lower = detail.to_ascii_lowercase();
    // Which credentials to check depends on the store the URL names.
    let denied = || {
        let creds = match what.split_once("://").map(|(s, _)| s) {
            Some("gs" | "gcs") => "GOOGLE_SERVICE_ACCOUNT, ...",
            Some("az" | "azure" | "abfs" | "abfss" | "adl") => "AZURE_STORAGE_ACCOUNT_NAME, ...",
            _ => "AWS_ACCESS_KEY_ID, ...",
        };
        format!(
            "access denied: check the credentials ({creds}) and the bucket policy ({})",
            first_line(&detail)
        )
    };
    let reason = match &e {
        E::NotFound { .. } => "not found".to_string(),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => denied(),
        _ if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") => {
            "the bucket does not exist".into()
        }
        // `403` as a word of its own: not inside a port (`127.0.0.1:40327`) or a duration.
        _ if lower.contains("accessdenied")
            || lower.contains("forbidden")
            || lower
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
                .any(|w| w.trim_matches('.') == "403") =>
        {
            denied()
        }
        _ if lower.contains("connect") || lower.contains("dns") || lower.contains("timed out") => {
            format!(
                "cannot reach the storage endpoint ({})",
                first_line(&detail)
            )
        }
        _ => first_line(&detail),
    };
    Error::file(what, reason)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The store key a user's URL names, taken as written: `%`, `#`, `~`, `[` and non-ASCII
/// letters are part of the key, never encoded a second time (`StorePath::from` would turn
/// `héllo` into `h%C3%A9llo`, a key that does not exist). An `http(s)://` URL is
/// percent-decoded first, as URLs are.
pub fn key_path(url: &RemoteUrl, key: &str) -> Result<StorePath> {
    let parsed = if matches!(url.scheme(), "http" | "https") {
        StorePath::from_url_path(key)
    } else {
        StorePath::parse(key)
    };
    parsed.map_err(|e| {
        Error::Config(format!(
            "'{}/{key}' is not a valid object key: {e}",
            url.store
        ))
    })
}

/// The object at `key`, `None` when there is none; errors name `what`.
pub async fn get_object(
    store: &Arc<dyn ObjectStore>,
    key: &StorePath,
    what: &str,
) -> Result<Option<bytes::Bytes>> {
    use object_store::ObjectStoreExt;
    match store.get(key).await {
        Ok(got) => got
            .bytes()
            .await
            .map(Some)
            .map_err(|e| store_error(what, e)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(what, e)),
    }
}

/// Every object below `prefix` (`""`: the whole bucket), in key order; errors name `what`.
pub async fn list_sorted(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    what: &str,
) -> Result<Vec<object_store::ObjectMeta>> {
    let prefix = match prefix {
        "" => None,
        p => Some(StorePath::parse(p).map_err(|e| Error::file(what, e))?),
    };
    let mut listed: Vec<object_store::ObjectMeta> = store
        .list(prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| store_error(what, e))?;
    listed.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: message.to_string().into(),
        }
    }

    #[test]
    fn a_port_or_a_duration_holding_403_is_no_access_denied() {
        // A dead endpoint on port 40327, reached after 403 ms: it cannot be reached.
        let e = store_error(
            "s3://bkt/a.csv",
            generic("Error performing HEAD http://127.0.0.1:40327/bkt/a.csv in 1.403s, after 3 retries - HTTP error: error sending request: client error (Connect): tcp connect error: Connection refused"),
        )
        .to_string();
        assert!(e.contains("cannot reach the storage endpoint"), "{e}");
        // A 403 answer is.
        let e = store_error(
            "s3://bkt/a.csv",
            generic("Error performing GET http://127.0.0.1:9000/bkt/a.csv: Client error with status 403."),
        )
        .to_string();
        assert!(e.contains("access denied"), "{e}");
    }
}
