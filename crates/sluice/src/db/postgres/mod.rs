//! PostgreSQL as a source: a table or a query, read in parallel partitions that all see one
//! snapshot, each a binary `COPY` streamed into Arrow batches.
//!
//! Planning ([`PgRead::open`]) connects once and keeps that connection's transaction
//! (`REPEATABLE READ`, read-only) open for the whole job: it exports its snapshot
//! (`pg_export_snapshot()`), describes the columns, counts the rows and, with a partition
//! column, finds its smallest and largest values — all in that snapshot. Each partition
//! ([`scan::PgScanExec`]) then opens its own connection, imports the snapshot (`SET
//! TRANSACTION SNAPSHOT`) and streams `COPY (SELECT ... WHERE <its range>) TO STDOUT
//! (FORMAT binary)`, so the partitions together read the rows as they were at one moment,
//! whatever is written meanwhile (Spark's JDBC source and ConnectorX read each partition at
//! its own moment). The first and last ranges are open (rows outside the bounds are read by
//! them) and NULLs in the partition column are read once, by the first.
//!
//! The row count of the snapshot is the read's independent count in the ledger, as a
//! Parquet footer's is for a file: the rows the partitions stream must add up to it.
//!
//! Credentials come from the URL (`${env:NAME}` is replaced by that variable), then from
//! libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, and for TLS
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`: see [`tls`]). The password is never
//! shown: the read is named by its URL without it.

pub mod encode;
pub mod scan;
pub mod tls;
pub mod types;
pub mod write;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::DbOptions;
use crate::error::{Error, Result};
use types::Kind;

/// One column as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Its name.
    pub name: String,
    /// Its PostgreSQL type's name.
    pub type_name: String,
    /// How it is read.
    pub kind: Kind,
}

/// A read planned: what every partition needs, as configuration (no connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRead {
    /// The read as shown to the user: the URL without its password, then the table or
    /// `(query)`.
    pub display: String,
    /// What the rows are selected from: the table, or the query as a subquery.
    pub from: String,
    /// The columns, in order.
    pub columns: Vec<PgColumn>,
    /// Each partition's condition (`None`: every row).
    pub partitions: Vec<Option<String>>,
    /// The snapshot every partition reads.
    pub snapshot: String,
    /// Rows in the snapshot (counted by the server).
    pub rows: u64,
}

/// Connects to the server a read is planned on, and holds the transaction whose snapshot
/// its partitions import (until dropped). Lives in the session's services, never in a
/// plan: it holds the password.
pub struct Connector {
    server: Server,
    /// The exporting transaction's connection: the snapshot lives while it does.
    _holder: Client,
    /// The URL without its password.
    pub url: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connector({})", self.url)
    }
}

impl Connector {
    /// A new connection reading in the snapshot `snapshot`.
    pub async fn reader(&self, snapshot: &str) -> Result<Client> {
        let client = self.server.connect(&self.url).await?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                literal(snapshot)
            ))
            .await
            .map_err(|e| pg_error(&self.url, e))?;
        Ok(client)
    }
}

impl PgRead {
    /// Plans the read of `url` as `options` say, with `threads` partitions by default: the
    /// read, and the connector its partitions read through.
    pub async fn open(
        url: &str,
        options: &DbOptions,
        threads: usize,
    ) -> Result<(PgRead, Connector)> {
        let server = Server::of(url)?;
        let shown = shown_url(&server.config);
        let holder = server.connect(&shown).await?;
        let fail = |e| pg_error(&shown, e);
        holder
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(fail)?;
        let snapshot: String = holder
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(fail)?
            .get(0);
        let (from, what) = match (&options.table, &options.query) {
            (Some(t), None) => (table_name(t)?, t.clone()),
            (None, Some(q)) => (
                format!("({}) AS sluice_query", q.trim().trim_end_matches(';')),
                "(query)".to_string(),
            ),
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give a database source a table or a query, not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Config(format!(
                    "{shown}: name what to read: --table SCHEMA.NAME or --query \"SELECT ...\""
                )))
            }
        };
        let display = format!("{shown} {what}");
        let statement = holder
            .prepare(&format!("SELECT * FROM {from}"))
            .await
            .map_err(|e| pg_error(&display, e))?;
        let mut columns = Vec::with_capacity(statement.columns().len());
        for c in statement.columns() {
            let kind = Kind::of(c.name(), c.type_(), c.type_modifier())
                .map_err(|e| Error::Database(format!("{display}: {e}")))?;
            columns.push(PgColumn {
                name: c.name().to_string(),
                type_name: c.type_().name().to_string(),
                kind,
            });
        }
        let (rows, partitions) = match &options.partition_column {
            None => {
                let row = holder
                    .query_one(&format!("SELECT count(*) FROM {from}"), &[])
                    .await
                    .map_err(|e| pg_error(&display, e))?;
                (row.get::<_, i64>(0), vec![None])
            }
            Some(column) => {
                let wanted = options.partitions.unwrap_or(threads).max(1);
                let c = statement
                    .columns()
                    .iter()
                    .find(|c| c.name() == column)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{display}: partition column '{column}' is not a column (columns: {})",
                            crate::error::column_list(&schema_of(&columns))
                        ))
                    })?;
                let axis = Axis::of(column, c.type_())
                    .map_err(|e| Error::Config(format!("{display}: {e}")))?;
                let quoted = ident(column);
                let row = holder
                    .query_one(
                        &format!(
                            "SELECT count(*), {}, {} FROM {from}",
                            axis.units_of(&format!("min({quoted})")),
                            axis.units_of(&format!("max({quoted})"))
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| pg_error(&display, e))?;
                let count: i64 = row.get(0);
                let (min, max): (Option<i64>, Option<i64>) = (row.get(1), row.get(2));
                let mut bounds = [min, max];
                for (bound, given) in bounds
                    .iter_mut()
                    .zip([&options.lower_bound, &options.upper_bound])
                {
                    if let Some(text) = given {
                        *bound = Some(axis.parse(&holder, text).await.map_err(|e| {
                            Error::Config(format!(
                                "{display}: bound '{text}' of partition column '{column}': {e}"
                            ))
                        })?);
                    }
                }
                let [lower, upper] = bounds;
                let partitions = match (lower, upper) {
                    (Some(lo), Some(hi)) => ranges(&quoted, axis, lo, hi, wanted),
                    // No value at all (only NULLs, or no rows): one read of everything.
                    _ => vec![None],
                };
                (count, partitions)
            }
        };
        let read = PgRead {
            display,
            from,
            columns,
            partitions,
            snapshot,
            rows: u64::try_from(rows).unwrap_or(0),
        };
        Ok((
            read,
            Connector {
                server,
                _holder: holder,
                url: shown,
            },
        ))
    }

    /// The Arrow schema of the rows.
    pub fn schema(&self) -> datafusion::arrow::datatypes::Schema {
        schema_of(&self.columns)
    }

    /// The `COPY` statement of partition `partition`, reading the columns `columns` (by
    /// index).
    pub fn copy_sql(&self, partition: usize, columns: &[usize]) -> String {
        let columns: Vec<String> = columns
            .iter()
            .filter_map(|i| self.columns.get(*i))
            .map(|c| ident(&c.name))
            .collect();
        let select = if columns.is_empty() {
            // No column wanted (count(*)): one constant per row keeps the rows.
            "1".to_string()
        } else {
            columns.join(", ")
        };
        let filter = match self.partitions.get(partition).cloned().flatten() {
            Some(p) => format!(" WHERE {p}"),
            None => String::new(),
        };
        format!(
            "COPY (SELECT {select} FROM {}{filter}) TO STDOUT (FORMAT binary)",
            self.from
        )
    }
}

/// The Arrow schema of rows of `columns`.
fn schema_of(columns: &[PgColumn]) -> datafusion::arrow::datatypes::Schema {
    datafusion::arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, c.kind.data_type(), true))
            .collect::<Vec<_>>(),
    )
}

/// The values of a partition column as whole numbers, so its range can be cut: integers as
/// they are, dates as days and timestamps as microseconds since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Integer,
    Date,
    Timestamp,
    TimestampTz,
}

impl Axis {
    fn of(column: &str, ty: &Type) -> std::result::Result<Axis, String> {
        Ok(match *ty {
            Type::INT2 | Type::INT4 | Type::INT8 => Axis::Integer,
            Type::DATE => Axis::Date,
            Type::TIMESTAMP => Axis::Timestamp,
            Type::TIMESTAMPTZ => Axis::TimestampTz,
            _ => {
                return Err(format!(
                    "partition column '{column}' is {}: it must be an integer, date or timestamp column",
                    ty.name()
                ))
            }
        })
    }

    /// SQL turning `expr` (of the column's type) into the axis' units (a bigint).
    fn units_of(self, expr: &str) -> String {
        match self {
            Axis::Integer => format!("({expr})::int8"),
            Axis::Date => format!("(({expr}) - date '1970-01-01')::int8"),
            Axis::Timestamp | Axis::TimestampTz => {
                format!("floor(extract(epoch from {expr}) * 1000000)::int8")
            }
        }
    }

    /// SQL for the column's value at `units`.
    fn literal(self, units: i64) -> String {
        match self {
            Axis::Integer => units.to_string(),
            Axis::Date => format!("(date '1970-01-01' + {units})"),
            Axis::Timestamp => {
                format!("(timestamp '1970-01-01 00:00:00' + interval '{units} microseconds')")
            }
            Axis::TimestampTz => {
                format!("(timestamptz '1970-01-01 00:00:00+00' + interval '{units} microseconds')")
            }
        }
    }

    /// A bound the user gave, in the axis' units (read by the server, as the column's type).
    async fn parse(self, client: &Client, text: &str) -> std::result::Result<i64, String> {
        if self == Axis::Integer {
            return text
                .trim()
                .parse()
                .map_err(|_| "not an integer".to_string());
        }
        let ty = match self {
            Axis::Date => "date",
            Axis::Timestamp => "timestamp",
            _ => "timestamptz",
        };
        let sql = format!("SELECT {}", self.units_of(&format!("$1::text::{ty}")));
        client
            .query_one(&sql, &[&text])
            .await
            .map(|row| row.get(0))
            .map_err(|e| {
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            })
    }
}

/// `wanted` conditions on `column` cutting [`lo`, `hi`] (axis units) into equal ranges; the
/// first also takes what is below `lo` and the NULLs, the last what is above `hi`.
fn ranges(column: &str, axis: Axis, lo: i64, hi: i64, wanted: usize) -> Vec<Option<String>> {
    let (lo, hi) = (lo.min(hi) as i128, lo.max(hi) as i128);
    let span = hi - lo + 1;
    let n = (wanted as i128).min(span).max(1);
    if n == 1 {
        return vec![None];
    }
    let width = (span + n - 1) / n;
    let cuts: Vec<i64> = (1..n)
        .map(|k| lo + k * width)
        .filter(|c| *c <= hi)
        .map(|c| c as i64)
        .collect();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let lit = |c: i64| axis.literal(c);
    out.push(Some(format!(
        "{column} < {} OR {column} IS NULL",
        lit(cuts[0])
    )));
    for pair in cuts.windows(2) {
        out.push(Some(format!(
            "{column} >= {} AND {column} < {}",
            lit(pair[0]),
            lit(pair[1])
        )));
    }
    out.push(Some(format!("{column} >= {}", lit(cuts[cuts.len() - 1]))));
    out
}

/// Where and how to connect: the settings, and the TLS connector they ask for.
#[derive(Clone)]
struct Server {
    config: Config,
    tls: MakeRustlsConnect,
}

impl Server {
    /// The server of `url` (its certificates loaded).
    fn of(url: &str) -> Result<Server> {
        let (config, tls) = config(url)?;
        Ok(Server {
            tls: tls.connector()?,
            config,
        })
    }

    /// A connection (its driver running on the runtime); errors name `shown`.
    async fn connect(&self, shown: &str) -> Result<Client> {
        let (client, connection) =
            self.config
                .connect(self.tls.clone())
                .await
                .map_err(|e| match pg_error(shown, e) {
                    Error::Database(line) if line.contains("invalid peer certificate") => {
                        Error::Database(format!(
                            "{line} (the certificate must chain to sslrootcert, \
                         or to the system's roots without it, and name the host for verify-full)"
                        ))
                    }
                    other => other,
                })?;
        tokio::spawn(async move {
            // Ends when the client is dropped, or with the connection's error (which the
            // client's next call reports).
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// The connection settings of `url`, completed from libpq's environment variables, and its
/// TLS settings.
fn config(url: &str) -> Result<(Config, tls::TlsOptions)> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (url, tls) = tls::TlsOptions::take(&expand_env(url)?, env)?;
    let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The parser's message names the part at fault, never the password.
        Error::Config(format!(
            "not a PostgreSQL URL ({e}): postgres://USER@HOST:PORT/DATABASE"
        ))
    })?;
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        let port = match env("PGPORT") {
            Some(p) => p
                .parse()
                .map_err(|_| Error::Config(format!("PGPORT is not a port: '{p}'")))?,
            None => 5432,
        };
        config.port(port);
    }
    if config.get_user().is_none() {
        match env("PGUSER").or_else(|| env("USER")) {
            Some(user) => config.user(&user),
            None => {
                return Err(Error::Config(
                    "no PostgreSQL user: give it in the URL (postgres://USER@HOST/DB) or PGUSER"
                        .into(),
                ))
            }
        };
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    config.ssl_mode(tls.mode.ssl_mode());
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    Ok((config, tls))
}

/// `url` with each `${env:NAME}` replaced by that variable (a missing one is an error).
fn expand_env(url: &str) -> Result<String> {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find("${env:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::Config("an unclosed ${env: in a database URL".into()))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            Error::Config(format!(
                "the database URL uses ${{env:{name}}}, which is not set"
            ))
        })?;
        // The value goes into a URL: characters that would end its part are escaped.
        out.push_str(
            &percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `url` as shown to the user: without its password (`postgres://USER@HOST:PORT/DB`).
pub fn shown(url: &str) -> String {
    match config(url) {
        Ok((c, _)) => shown_url(&c),
        // Not a URL sluice can read: everything between `://` and `@` goes.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://...{}", &url[..scheme], &url[at..])
            }
            _ => url.to_string(),
        },
    }
}

/// The URL of `config` without its password: `postgres://USER@HOST:PORT/DB`.
fn shown_url(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "postgres://{}@{}:{}/{}",
        config.get_user().unwrap_or_default(),
        host,
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or_default()
    )
}

/// One line for a PostgreSQL error while reading `what`.
pub fn pg_error(what: &str, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut line = format!("{what}: {}", db.message());
        if let Some(detail) = db.detail() {
            line.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            line.push_str(&format!("; {hint}"));
        }
        return Error::Database(line);
    }
    Error::Database(format!("{what}: {}", crate::error::with_sources(&e)))
}

/// `name` (`SCHEMA.NAME`, parts optionally double-quoted) checked to be a table name, as SQL.
fn table_name(name: &str) -> Result<String> {
    let bad = || {
        Error::Config(format!(
            "'{name}' is not a table name: SCHEMA.NAME, with double quotes around a part that \
             has other characters than letters, digits and _"
        ))
    };
    let mut parts = Vec::new();
    let mut rest = name.trim();
    loop {
        let (part, after) = if let Some(inner) = rest.strip_prefix('"') {
            let end = inner.find('"').ok_or_else(bad)?;
            (format!("\"{}\"", &inner[..end]), &inner[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let part = &rest[..end];
            if part.is_empty()
                || !part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
            {
                return Err(bad());
            }
            (part.to_string(), &rest[end..])
        };
        parts.push(part);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.is_empty() => break,
            None => return Err(bad()),
        }
    }
    if parts.len() > 3 {
        return Err(bad());
    }
    Ok(parts.join("."))
}

/// `name` as an SQL identifier (always quoted: a column's name is taken as the server
/// gave it).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_open_at_both_ends_and_take_the_nulls_once() {
        let r = ranges("\"id\"", Axis::Integer, 1, 100, 4);
        assert_eq!(
            r,
            vec![
                Some("\"id\" < 26 OR \"id\" IS NULL".to_string()),
                Some("\"id\" >= 26 AND \"id\" < 51".to_string()),
                Some("\"id\" >= 51 AND \"id\" < 76".to_string()),
                Some("\"id\" >= 76".to_string()),
            ]
        );
        // More partitions than values: one per value.
        assert_eq!(ranges("c", Axis::Integer, 5, 6, 8).len(), 2);
        assert_eq!(ranges("c", Axis::Integer, 5, 5, 8), vec![None]);
    }

    #[test]
    fn table_names_are_checked() {
        assert_eq!(table_name("public.orders").expect("ok"), "public.orders");
        assert_eq!(
            table_name("\"My Schema\".\"Odd # name\"").expect("ok"),
            "\"My Schema\".\"Odd # name\""
        );
        for bad in ["", "a;drop table x", "a.", "a b", "\"open"] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_never_show_the_password() {
        let (c, _) = config("postgres://me:s3cret@db.local:5433/sales").expect("config");
        let shown = shown_url(&c);
        assert_eq!(shown, "postgres://me@db.local:5433/sales");
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn env_references_are_replaced_and_escaped() {
        std::env::set_var("SLUICE_TEST_PG_PW", "p@ss/w:rd");
        let url = expand_env("postgres://me:${env:SLUICE_TEST_PG_PW}@h/db").expect("expand");
        assert_eq!(url, "postgres://me:p%40ss%2Fw%3Ard@h/db");
        let (c, _) = config("postgres://me:${env:SLUICE_TEST_PG_PW}@h/db").expect("config");
        assert_eq!(c.get_password(), Some("p@ss/w:rd".as_bytes()));
        assert!(expand_env("postgres://${env:SLUICE_NOT_SET_ANYWHERE}@h/db").is_err());
    }
}
