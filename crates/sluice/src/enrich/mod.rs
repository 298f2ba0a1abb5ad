//! Enrichment from HTTP APIs (`[[enrich]]`): one call per distinct key, bounded async
//! concurrency (fixed or adaptive), a token-bucket rate limit, retries with backoff and
//! `Retry-After`, a persistent cache, and failures that become rejects, NULLs or a stop —
//! never a silently missing row.

pub mod cache;
pub mod call;
pub mod exec;
pub mod limit;
pub mod spec;
pub mod stats;
pub mod template;

pub use call::Enricher;
pub use exec::{EnrichDef, EnrichMap};
pub use spec::{BatchSpec, Concurrency, EnrichSpec, ExtractSpec, ExtractType, OnCallError};
pub use stats::{EnrichReport, EnrichStats};
