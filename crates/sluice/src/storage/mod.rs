//! The shared kernel of storage: object stores (and the counting wrapper), file formats and
//! their options, partition folder naming, and the output manifest. Source, sink and the stages import these from here, so that
//! they meet only in the plan.

pub mod counting;
pub mod format;
pub mod manifest;
pub mod partition;
pub mod pooled;
pub mod stores;
