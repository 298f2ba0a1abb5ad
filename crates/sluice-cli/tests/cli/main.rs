//! Integration tests: the real `sluice` binary on real files in temp folders.

mod cluster;
mod crash;
mod dialect;
mod differential;
mod enrich;
mod errors;
mod explain;
mod faults;
mod formats;
mod inputs;
mod ledger;
mod lookup;
mod newuser;
mod output;
mod pipeline;
mod postgres;
mod rejects;
mod s3;
mod schema;
mod split;
mod stores;
mod workdir;
