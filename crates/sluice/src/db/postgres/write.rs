//! PostgreSQL as an output: a job's rows loaded by one binary `COPY ... FROM STDIN` inside
//! one transaction, committed only once the job's books balance ([`Target::load`], then
//! [`Pending::commit`]).
//!
//! The transaction makes the load atomic: the table (created when missing), a `TRUNCATE`
//! for `overwrite`, the rows and, with `upsert`, the `INSERT ... ON CONFLICT` from a
//! temporary table all appear at once at `COMMIT`, or not at all — a failed job, a killed
//! process or a dropped connection rolls everything back. The job's partitions encode their
//! rows in parallel; one connection streams them (PostgreSQL loads a `COPY` on one backend
//! either way, and one transaction is what makes it atomic). A schema that does not fit an
//! existing table is one line before any row is sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use super::encode::{create_type, encode, Encoder, HEADER, TRAILER};
use super::{ident, pg_error, table_name, Server};
use crate::error::{Error, Result};
use crate::sink::WriteMode;

/// Bytes of encoded rows sent to the server at a time.
const CHUNK: usize = 1 << 20;

/// A table to load into.
pub struct Target {
    server: Server,
    /// The table as SQL.
    table: String,
    /// The URL without its password, then the table.
    pub display: String,
}

/// How to load (the sink's database options).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `error` (the table must not exist), `append` or `overwrite` (emptied in the same
    /// transaction).
    pub mode: WriteMode,
    /// Insert or update by these key columns (`INSERT ... ON CONFLICT`).
    pub upsert: Vec<String>,
    /// Create the table from the rows' schema when it is missing (default true).
    pub create: bool,
}

/// A load whose transaction is still open: [`Pending::commit`] makes it visible; dropping
/// it rolls it back.
pub struct Pending {
    client: Client,
    /// Rows the server took.
    pub rows: u64,
    /// Bytes of `COPY` data sent.
    pub bytes: u64,
}

impl Pending {
    /// Commits the load.
    pub async fn commit(self, display: &str) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(display, e))
    }
}

impl Target {
    /// The table `table` in the database of `url` (nothing is contacted yet).
    pub fn open(url: &str, table: Option<&str>) -> Result<Target> {
        let server = super::Server::of(url)?;
        let shown = super::shown_url(&server.config);
        let table = table.ok_or_else(|| {
            Error::Config(format!(
                "{shown}: name the table to write: --table SCHEMA.NAME (or table = \"...\" in [sink])"
            ))
        })?;
        let display = format!("{shown} {table}");
        Ok(Target {
            server,
            table: table_name(table)?,
            display,
        })
    }

    /// Loads the rows of `streams` (all of schema `schema`) as `options` say, in a
    /// transaction left open.
    pub async fn load(
        &self,
        schema: &SchemaRef,
        streams: Vec<SendableRecordBatchStream>,
        options: &LoadOptions,
        progress: Arc<crate::ledger::WriteProgress>,
    ) -> Result<Pending> {
        let fail = |e| pg_error(&self.display, e);
        let client = self.server.connect(&self.display).await?;
        client.batch_execute("BEGIN").await.map_err(fail)?;
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&self.table])
            .await
            .map_err(fail)?
            .get(0);
        match (exists.is_some(), options.mode) {
            (true, WriteMode::Error) => {
                return Err(Error::Database(format!(
                    "{}: the table already exists (use --mode append or --mode overwrite)",
                    self.display
                )))
            }
            (false, _) if !options.create => {
                return Err(Error::Config(format!(
                    "{}: the table does not exist (and create = false)",
                    self.display
                )))
            }
            (false, _) => {
                let mut columns = Vec::with_capacity(schema.fields().len());
                for f in schema.fields() {
                    let ty = create_type(f.data_type()).ok_or_else(|| {
                        Error::Config(format!(
                            "{}: column '{}' is {}, which sluice cannot write to PostgreSQL yet: \
                             cast it in a SQL step",
                            self.display,
                            f.name(),
                            f.data_type()
                        ))
                    })?;
                    let not_null = if f.is_nullable() { "" } else { " NOT NULL" };
                    columns.push(format!("{} {ty}{not_null}", ident(f.name())));
                }
                let keys = if options.upsert.is_empty() {
                    String::new()
                } else {
                    let keys: Vec<String> = options.upsert.iter().map(|k| ident(k)).collect();
                    format!(", PRIMARY KEY ({})", keys.join(", "))
                };
                client
                    .batch_execute(&format!(
                        "CREATE TABLE {} ({}{keys})",
                        self.table,
                        columns.join(", ")
                    ))
                    .await
                    .map_err(fail)?;
            }
            (true, _) => {}
        }
        // The table's types decide how each column is written; a column the table lacks is
        // the server's one line.
        let names: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
        let statement = client
            .prepare(&format!("SELECT {} FROM {}", names.join(", "), self.table))
            .await
            .map_err(fail)?;
        let encoders = schema
            .fields()
            .iter()
            .zip(statement.columns())
            .map(|(f, c)| Encoder::for_column(f.name(), f.data_type(), c.type_()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Database(format!("{}: {e}", self.display)))?;
        for key in &options.upsert {
            if schema.index_of(key).is_err() {
                return Err(Error::Config(format!(
                    "{}: upsert key '{key}' is not a column of the output",
                    self.display
                )));
            }
        }
        if exists.is_some() && options.mode == WriteMode::Overwrite {
            client
                .batch_execute(&format!("TRUNCATE {}", self.table))
                .await
                .map_err(fail)?;
        }
        let into = if options.upsert.is_empty() {
            self.table.clone()
        } else {
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE sluice_upsert (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
                    self.table
                ))
                .await
                .map_err(fail)?;
            "sluice_upsert".to_string()
        };
        let columns = names.join(", ");
        let sink = client
            .copy_in::<_, Bytes>(&format!(
                "COPY {into} ({columns}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(fail)?;
        futures::pin_mut!(sink);
        // Each partition encodes its rows on its own task; this one sends them.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<(Bytes, u64)>>(streams.len().max(1) * 2);
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in streams {
            let (tx, encoders, display) = (tx.clone(), encoders.clone(), self.display.clone());
            let schema = Arc::clone(schema);
            tasks.spawn(async move {
                let mut buf = BytesMut::with_capacity(CHUNK + CHUNK / 4);
                let mut rows = 0u64;
                let mut seen = 0u64;
                while let Some(batch) = stream.next().await {
                    let batch = match batch {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(Error::from_engine(e))).await;
                            return;
                        }
                    };
                    if let Err(u) = encode(&batch, &encoders, &mut buf) {
                        let name = schema.field(u.column).name().clone();
                        let _ = tx
                            .send(Err(Error::Database(format!(
                                "{display}: column '{name}' of output row {}: {}",
                                seen + u.row as u64 + 1,
                                u.what
                            ))))
                            .await;
                        return;
                    }
                    seen += batch.num_rows() as u64;
                    rows += batch.num_rows() as u64;
                    if buf.len() >= CHUNK {
                        let chunk = buf.split().freeze();
                        if tx
                            .send(Ok((chunk, std::mem::take(&mut rows))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                if !buf.is_empty() || rows > 0 {
                    let _ = tx.send(Ok((buf.split().freeze(), rows))).await;
                }
            });
        }
        drop(tx);
        let mut sent_rows = 0u64;
        let mut bytes = HEADER.len() as u64;
        sink.send(Bytes::from_static(HEADER)).await.map_err(fail)?;
        while let Some(chunk) = rx.recv().await {
            let (chunk, rows) = match chunk {
                Ok(c) => c,
                Err(e) => {
                    tasks.abort_all();
                    return Err(e);
                }
            };
            bytes += chunk.len() as u64;
            sent_rows += rows;
            progress.rows.fetch_add(rows, Ordering::Relaxed);
            sink.send(chunk).await.map_err(fail)?;
        }
        sink.send(Bytes::from_static(TRAILER)).await.map_err(fail)?;
        bytes += TRAILER.len() as u64;
        let copied = sink.finish().await.map_err(fail)?;
        if copied != sent_rows {
            return Err(Error::Ledger(format!(
                "{}: sluice sent {sent_rows} rows but the server took {copied}",
                self.display
            )));
        }
        if !options.upsert.is_empty() {
            let keys: Vec<String> = options.upsert.iter().map(|k| ident(k)).collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !keys.contains(n))
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            let merged = client
                .execute(
                    &format!(
                        "INSERT INTO {} ({columns}) SELECT {columns} FROM sluice_upsert \
                         ON CONFLICT ({}) DO {action}",
                        self.table,
                        keys.join(", ")
                    ),
                    &[],
                )
                .await
                .map_err(fail)?;
            if merged != copied && !updates.is_empty() {
                return Err(Error::Database(format!(
                    "{}: {copied} rows loaded but {merged} inserted or updated: a key appears \
                     more than once in the output",
                    self.display
                )));
            }
        }
        Ok(Pending {
            client,
            rows: copied,
            bytes,
        })
    }
}
