//! `sluice schema INPUT...`

use clap::Args;
use sluice::source::dialect::Dialect;
use sluice::source::merge::type_name;
use sluice::Source;

use crate::args::{DbArgs, ReadArgs};

/// Print the merged schema of inputs and how each file differs from it.
#[derive(Debug, Args)]
pub struct SchemaCmd {
    /// Input files, folders and globs.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl SchemaCmd {
    /// Prints the schema.
    pub async fn execute(self) -> anyhow::Result<()> {
        let ctx = sluice::context::session(sluice::context::default_threads());
        let source = Source::open(
            &ctx,
            sluice::ReadOptions {
                database: self.db.to_options(),
                ..self.read.to_options(self.inputs.clone())
            },
        )
        .await?;
        let schema = source.output_schema();
        let diffs = source.differences();
        if self.json {
            let columns: Vec<_> = schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": type_name(f.data_type())}))
                .collect();
            let files: Vec<_> = diffs
                .iter()
                .zip(&source.files)
                .map(|((file, notes), f)| {
                    let mut entry = serde_json::json!({"file": file, "differences": notes});
                    if let Some(d) = &f.dialect {
                        entry["dialect"] = dialect_json(d);
                    }
                    entry
                })
                .collect();
            let mut out = serde_json::json!({
                "columns": columns,
                "decisions": source.decisions,
                "files": files,
            });
            if let Some(read) = &source.database {
                out["database"] = serde_json::json!({
                    "read": read.display,
                    "rows": read.rows,
                    "server_types": read.columns.iter()
                        .map(|c| serde_json::json!({"name": c.name, "type": c.type_name}))
                        .collect::<Vec<_>>(),
                });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let width = schema
            .fields()
            .iter()
            .map(|f| f.name().len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!("{:width$}  type", "column");
        for f in schema.fields() {
            println!("{:width$}  {}", f.name(), type_name(f.data_type()));
        }
        if !source.decisions.is_empty() {
            println!();
            for d in &source.decisions {
                println!("widened {d}");
            }
        }
        println!();
        if let Some(read) = &source.database {
            // A database read: its columns as the server types them.
            println!("{} ({} rows):", read.display, read.rows);
            for c in &read.columns {
                println!("  {}: {}", c.name, c.type_name);
            }
            return Ok(());
        }
        println!("{} file(s):", diffs.len());
        for ((file, notes), f) in diffs.iter().zip(&source.files) {
            if notes.is_empty() {
                println!("  {file}: matches");
            } else {
                println!("  {file}: {}", notes.join("; "));
            }
            if let Some(d) = &f.dialect {
                match &d.doubt {
                    None => println!("    dialect: {} (sure)", d.describe()),
                    Some(why) => println!("    dialect: {} (a guess: {why})", d.describe()),
                }
            }
        }
        Ok(())
    }
}

/// A CSV file's dialect as JSON: each aspect, and how sure the detection was.
fn dialect_json(d: &Dialect) -> serde_json::Value {
    let ch = |c: u8| (c as char).to_string();
    serde_json::json!({
        "delimiter": ch(d.rules.delimiter),
        "quote": ch(d.rules.quote),
        "escape": d.rules.escape.map(ch),
        "comment": d.rules.comment.map(ch),
        "header": d.header,
        "skip_rows": d.skip,
        "columns": d.columns,
        "trailing_delimiter": d.trailing,
        "unnamed_first_column": d.unnamed_first,
        "sure": d.doubt.is_none(),
        "doubt": d.doubt,
    })
}
