//! The DataFusion session sluice runs in.

use std::sync::Arc;

use datafusion::execution::config::SessionConfig;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use crate::services::Services;
use crate::stage::SluiceQueryPlanner;

/// The number of CPU cores, the default for `--threads`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A session tuned for ingest: `threads` partitions, byte-range splitting of large files,
/// plain (non-view) string types so every format reads into the same Arrow types, and a
/// planner for sluice's stages, and the [`Services`] its plan nodes run with.
pub fn session(threads: usize) -> SessionContext {
    session_with(threads, None)
}

/// [`session`] with another minimum size for splitting a file into byte ranges.
pub fn session_with(threads: usize, split_min_size: Option<usize>) -> SessionContext {
    session_from(session_config(threads, split_min_size))
}

/// A session like [`session`]'s with `config` (made by [`session_config`], then adjusted).
pub fn session_from(config: SessionConfig) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(SluiceQueryPlanner))
        .build();
    SessionContext::new_with_state(state)
}

/// The configuration of a [`session_with`] (with fresh [`Services`]): also what a cluster's
/// scheduler and executors start from (see [`crate::cluster`]).
pub fn session_config(threads: usize, split_min_size: Option<usize>) -> SessionConfig {
    let threads = threads.max(1);
    let mut config = SessionConfig::new()
        .with_target_partitions(threads)
        .with_repartition_file_scans(true)
        .with_repartition_file_min_size(split_min_size.unwrap_or(1 << 20).max(1))
        .with_batch_size(8192)
        .with_information_schema(true)
        .with_extension(Arc::new(Services::default()))
        .with_option_extension(crate::services::SluiceOptions::default());
    let options = config.options_mut();
    options.execution.parquet.schema_force_view_types = false;
    options.execution.collect_statistics = false;
    options.sql_parser.map_string_types_to_utf8view = false;
    config
}
