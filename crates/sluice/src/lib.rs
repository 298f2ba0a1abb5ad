//! # sluice
//!
//! Ingest many data files in parallel, union them by column name, transform them with SQL on
//! Apache DataFusion, and write clean, partitioned output.
//!
//! ```no_run
//! use sluice::{Job, ReadOptions, SinkOptions};
//!
//! # async fn demo() -> sluice::Result<()> {
//! let job = Job {
//!     source: ReadOptions {
//!         paths: vec!["data/2024-*/*.csv".into(), "extra/".into()],
//!         file_column: Some("source_file".into()),
//!         ..ReadOptions::default()
//!     },
//!     stages: vec![],
//!     sink: SinkOptions {
//!         path: "out/".into(),
//!         partition_by: vec!["country".into()],
//!         ..SinkOptions::default()
//!     },
//!     threads: 2,
//!     ..Job::default()
//! };
//! let report = job.run(&Default::default()).await?;
//! assert_eq!(report.rows_in, report.rows_out);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod builder;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod context;
pub mod db;
pub mod enrich;
pub mod error;
pub mod explain;
pub mod function;
pub mod job;
pub mod ledger;
pub mod lookup;
pub mod pipeline;
mod plan;
pub mod report;
pub mod services;
pub mod sink;
pub mod source;
pub mod stage;
pub mod stage_spec;
pub mod storage;
mod tls;

pub use builder::Pipeline;
/// The DataFusion version sluice is built on, re-exported for custom functions and plans.
pub use datafusion;
pub use error::{Error, Result};
pub use function::BatchFn;
pub use job::{Job, Stage, Transform};
pub use report::{Progress, Report};
pub use sink::{SinkOptions, WriteMode};
pub use source::{ReadOptions, Source};
