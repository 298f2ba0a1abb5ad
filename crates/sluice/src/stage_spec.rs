//! A stage as configuration: what a plan holds of a lookup, enrich or batch-function stage,
//! enough to build the running stage again in another process.
//!
//! A [`StageSpec`] is plain data (it serializes to JSON and back): the stage's own settings
//! as the user wrote them, the storage options its files need and the id of the books its
//! rejected rows go to. What runs — the loaded lookup, the HTTP client with its limiter and
//! cache, the function — is built from it by [`StageSpec::build`] where the plan runs, once
//! per session (see [`crate::services::Services::stage_or_build`]).

use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::enrich::{EnrichDef, EnrichSpec, Enricher};
use crate::error::{Error, Result};
use crate::function::FnDef;
use crate::lookup::{Lookup, LookupDef, LookupSpec};
use crate::services::Services;
use crate::stage::{SluiceQueryPlanner, StageDef};
use crate::storage::stores::StorageOptions;

/// A stage as configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageSpec {
    /// A broadcast lookup (`[[lookup]]`).
    Lookup {
        /// The stage as written.
        spec: Box<LookupSpec>,
        /// Options of the object stores its files are in.
        #[serde(default)]
        storage: StorageOptions,
        /// The books (rejects and ledger) rows without a match go to.
        books: crate::ledger::rejects::BooksRef,
    },
    /// Calls to an HTTP API (`[[enrich]]`). Secrets stay `${env:NAME}` references: their
    /// values are read where the stage is built.
    Enrich {
        /// The stage as written.
        spec: Box<EnrichSpec>,
        /// Options of the object store its cache is in.
        #[serde(default)]
        storage: StorageOptions,
        /// The books rows whose calls fail go to.
        books: crate::ledger::rejects::BooksRef,
        /// Rows reach the stage hash-partitioned by its key, so each key is in one
        /// partition only (on a cluster: one call per distinct key across the tasks).
        #[serde(default)]
        by_key: bool,
    },
    /// A batch function, found by its name among the session's registered functions.
    Function {
        /// The name it was registered under.
        name: String,
    },
}

impl StageSpec {
    /// The stage's name (a table for later SQL steps).
    pub fn name(&self) -> &str {
        match self {
            StageSpec::Lookup { spec, .. } => &spec.name,
            StageSpec::Enrich { spec, .. } => &spec.name,
            StageSpec::Function { name } => name,
        }
    }

    /// The input columns whose values must each be in one partition only (an enrich stage
    /// with `by_key`: its key).
    pub fn partition_keys(&self) -> Result<Option<Vec<String>>> {
        match self {
            StageSpec::Enrich {
                spec, by_key: true, ..
            } => Ok(Some(spec.key_columns()?)),
            _ => Ok(None),
        }
    }

    /// The spec a task running `partitions` of the stage's partitions builds: an enrich
    /// stage keyed across partitions gets that many shares of its per-partition limits
    /// (see [`EnrichSpec::split_among`]); any other stage is as it is.
    pub fn for_partitions(&self, partitions: usize) -> Result<StageSpec> {
        match self {
            StageSpec::Enrich {
                spec,
                storage,
                books,
                by_key: true,
            } => Ok(StageSpec::Enrich {
                spec: Box::new(spec.for_partitions(partitions)?),
                storage: storage.clone(),
                books: *books,
                by_key: true,
            }),
            other => Ok(other.clone()),
        }
    }

    /// The spec as it may leave this process (in a plan sent to a cluster): the storage
    /// options of a lookup's files or an enrich stage's cache without their secrets
    /// ([`crate::cluster::stores::shareable`]); executors open those stores with their own
    /// credentials, as they do the job's inputs.
    pub fn for_wire(&self) -> StageSpec {
        let mut wire = self.clone();
        match &mut wire {
            StageSpec::Lookup { storage, .. } | StageSpec::Enrich { storage, .. } => {
                *storage = crate::cluster::stores::shareable(storage);
            }
            StageSpec::Function { .. } => {}
        }
        wire
    }

    /// The spec as JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Config(format!("stage spec: {e}")))
    }

    /// A spec from [`StageSpec::to_json`]'s text.
    pub fn from_json(text: &str) -> Result<StageSpec> {
        serde_json::from_str(text).map_err(|e| Error::Config(format!("stage spec: {e}")))
    }

    /// Builds the running stage in the session of `ctx`: loads the lookup's files, makes
    /// the HTTP client, or finds the registered function.
    pub async fn build(&self, ctx: &SessionContext) -> Result<Arc<dyn StageDef>> {
        self.build_in(ctx, None).await
    }

    /// [`StageSpec::build`]; with `shared`, a lookup is loaded once per process under that
    /// key ([`Lookup::load_shared`]).
    async fn build_in(
        &self,
        ctx: &SessionContext,
        shared: Option<String>,
    ) -> Result<Arc<dyn StageDef>> {
        let config = ctx.copied_config();
        let services = Services::of(&config)?;
        Ok(match self {
            StageSpec::Lookup {
                spec,
                storage,
                books,
            } => {
                let mut spec = (**spec).clone();
                spec.storage = storage.clone();
                let lookup = Arc::new(match shared {
                    Some(key) => {
                        Lookup::load_shared(key, Box::pin(Lookup::load(ctx, &spec))).await?
                    }
                    None => Lookup::load(ctx, &spec).await?,
                });
                Arc::new(LookupDef::new(
                    self.clone(),
                    lookup,
                    services.books_for(books, &config)?,
                ))
            }
            StageSpec::Enrich {
                spec,
                storage,
                books,
                ..
            } => {
                let mut spec = (**spec).clone();
                spec.storage = storage.clone();
                let enricher = Arc::new(Enricher::new(&spec, std::path::Path::new(""))?);
                Arc::new(EnrichDef::new(
                    self.clone(),
                    enricher,
                    services.books_for(books, &config)?,
                ))
            }
            StageSpec::Function { name } => Arc::new(FnDef(services.function(name)?)),
        })
    }

    /// [`StageSpec::build`] in the session a task runs in.
    pub async fn build_for_task(&self, task: &TaskContext) -> Result<Arc<dyn StageDef>> {
        let state = SessionStateBuilder::new()
            .with_config(task.session_config().clone())
            .with_runtime_env(task.runtime_env())
            .with_default_features()
            .with_query_planner(Arc::new(SluiceQueryPlanner))
            .build();
        // A job's tasks in one process (a cluster executor) share a lookup's table.
        let shared = format!("{}/{}", task.session_id(), self.to_json()?);
        self.build_in(&SessionContext::new_with_state(state), Some(shared))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_back_what_they_write() {
        let lookup: LookupSpec = toml::from_str(
            r#"
name = "cats"
paths = "cats #1.csv"
on = [{ left = "cat", right = "category" }, "region"]
columns = ["label"]
on_missing = "reject"
"#,
        )
        .expect("lookup");
        let enrich: EnrichSpec = toml::from_str(
            r#"
name = "meta"
url = "http://127.0.0.1:1/{id}?t=${env:TOKEN}"
concurrency = "auto"
headers = { Accept = "application/json" }
[extract]
title = "/title"
score = { path = "/score", type = "bigint" }
"#,
        )
        .expect("enrich");
        let specs = [
            StageSpec::Lookup {
                spec: Box::new(lookup),
                storage: [("region".to_string(), "eu".to_string())].into(),
                books: crate::ledger::rejects::BooksRef {
                    id: 7,
                    mode: crate::ledger::rejects::OnError::Reject,
                },
            },
            StageSpec::Enrich {
                spec: Box::new(enrich),
                storage: [("endpoint".to_string(), "http://127.0.0.1:9".to_string())].into(),
                books: crate::ledger::rejects::BooksRef {
                    id: 7,
                    mode: crate::ledger::rejects::OnError::Reject,
                },
                by_key: true,
            },
            StageSpec::Function {
                name: "scöre ~%#".into(),
            },
        ];
        for spec in specs {
            let text = spec.to_json().expect("write");
            let back = StageSpec::from_json(&text).expect("read back");
            assert_eq!(back.to_json().expect("write again"), text);
            assert_eq!(back.name(), spec.name());
        }
        let text = StageSpec::Function { name: "f".into() }
            .to_json()
            .expect("write");
        assert_eq!(text, r#"{"kind":"function","name":"f"}"#);
        assert!(StageSpec::from_json(r#"{"kind":"function","name":"f","x":1}"#).is_err());
    }
}
