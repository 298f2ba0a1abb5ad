//! User batch functions: Rust functions over whole batches, registered by name in the
//! session's [`crate::services::Services`] and run as stages.
//!
//! A plan refers to a function by its name only ([`StageSpec::Function`]); the function
//! itself is found among the session's registered functions where the plan runs — the way
//! DataFusion resolves UDFs — so a plan never holds a closure.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::stage::{BatchMap, Mapped, StageDef};
use crate::stage_spec::StageSpec;

/// A Rust function applied to every batch of a stage's input, on all partitions at once.
#[derive(Clone)]
pub struct BatchFn {
    /// The stage's name (a table for later SQL steps).
    pub name: String,
    /// The function.
    pub f: Arc<dyn Fn(RecordBatch) -> datafusion::error::Result<RecordBatch> + Send + Sync>,
}

impl std::fmt::Debug for BatchFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A [`BatchFn`] as a stage: opaque to the optimizer (it may read any column).
#[derive(Debug)]
pub struct FnDef(pub BatchFn);

impl StageDef for FnDef {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn reads(&self) -> Option<Vec<String>> {
        None
    }

    fn spec(&self) -> StageSpec {
        StageSpec::Function {
            name: self.0.name.clone(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn build(&self, input: &datafusion::arrow::datatypes::Schema) -> Result<Arc<dyn BatchMap>> {
        let empty = RecordBatch::new_empty(Arc::new(input.clone()));
        let schema = (self.0.f)(empty)
            .map_err(|e| Error::Config(format!("batch function '{}': {e}", self.0.name)))?
            .schema();
        Ok(Arc::new(FnMap {
            f: self.0.clone(),
            schema,
        }))
    }
}

/// A [`BatchFn`] over batches of one input schema.
#[derive(Debug)]
struct FnMap {
    f: BatchFn,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl BatchMap for FnMap {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn describe(&self) -> String {
        format!("BatchFnExec: name={}", self.f.name)
    }

    async fn map(
        &self,
        batch: RecordBatch,
        _task: crate::ledger::rejects::Task,
    ) -> datafusion::error::Result<Mapped> {
        // User code may block or run long: it must not hold a runtime worker. On a
        // multi-threaded runtime `block_in_place` hands this worker's other tasks to another
        // thread and runs the function right here (no copy to another thread, no more threads
        // busy than partitions); elsewhere it goes to a blocking thread.
        let f = Arc::clone(&self.f.f);
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let out = if multi {
            tokio::task::block_in_place(move || f(batch))?
        } else {
            tokio::task::spawn_blocking(move || f(batch))
                .await
                .map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "batch function '{}' panicked or was cancelled: {e}",
                        self.f.name
                    ))
                })??
        };
        // Same columns and types as announced (the schema object itself may differ).
        RecordBatch::try_new(Arc::clone(&self.schema), out.columns().to_vec())
            .map(Mapped::from)
            .map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!(
                "batch function '{}' returned other columns than for its first (empty) batch: {e}",
                self.f.name
            ))
            })
    }
}
