//! Object stores on executors: a job's `s3://`, `gs://`, `az://` and `http(s)://` inputs are
//! opened on each executor from the executor's own credentials (its environment, profile
//! files, instance metadata: `object_store`'s builders' chains), never from the client's.
//!
//! Only the storage options that are not secrets travel with the job ([`shareable`]:
//! endpoint, region, `allow_http`...), as a session setting; keys, tokens and passwords stay
//! with the client and are written in no plan, setting or log. An executor's stores are
//! built on first use, per job session ([`ExecutorStores`]).

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::object_store::ObjectStore;
use url::Url;

use crate::storage::stores::{build_store, is_remote, RemoteUrl, StorageOptions};

/// Storage option names (without their `aws_`, `google_`, `azure_` prefix) that configure
/// where and how to reach a store, not who may: the only ones a job sends to executors.
const SHAREABLE: [&str; 12] = [
    "endpoint",
    "endpoint_url",
    "region",
    "default_region",
    "allow_http",
    "virtual_hosted_style_request",
    "skip_signature",
    "unsigned_payload",
    "use_emulator",
    "account_name",
    "storage_account_name",
    "container_name",
];

/// The options of `options` an executor may be given: none that is a secret.
pub fn shareable(options: &StorageOptions) -> StorageOptions {
    options
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            let bare = ["aws_", "google_", "azure_", "azure_storage_"]
                .iter()
                .find_map(|p| k.strip_prefix(p))
                .unwrap_or(&k);
            SHAREABLE.contains(&bare)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An executor's object stores for one job: those registered, and remote stores built on
/// first use from the executor's environment and the job's shareable options.
#[derive(Debug)]
pub struct ExecutorStores {
    inner: DefaultObjectStoreRegistry,
    options: StorageOptions,
}

impl ExecutorStores {
    /// The stores of a job whose shareable storage options are `options`.
    pub fn new(options: StorageOptions) -> Self {
        ExecutorStores {
            inner: DefaultObjectStoreRegistry::new(),
            options,
        }
    }
}

impl ObjectStoreRegistry for ExecutorStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match self.inner.get_store(url) {
            Ok(store) => Ok(store),
            Err(_) if is_remote(url.as_str()) => {
                let remote = RemoteUrl::parse(url.as_str())?;
                let store = build_store(&remote, &self.options)?;
                self.inner.register_store(url, Arc::clone(&store));
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_travel_to_executors() {
        let options: StorageOptions = [
            ("aws_endpoint", "http://127.0.0.1:9000"),
            ("region", "eu-west-1"),
            ("allow_http", "true"),
            ("aws_access_key_id", "AKIA..."),
            ("aws_secret_access_key", "s3cr3t"),
            ("aws_session_token", "tok"),
            ("azure_storage_account_key", "k3y"),
            ("azure_storage_account_name", "acct"),
            ("google_service_account_key", "{...}"),
            ("sas_token", "sig"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shared = shareable(&options);
        let shared: Vec<&str> = shared.keys().map(String::as_str).collect();
        assert_eq!(
            shared,
            [
                "allow_http",
                "aws_endpoint",
                "azure_storage_account_name",
                "region"
            ]
        );
    }
}
