//! The progress bar on stderr and the end-of-run summary.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice::{Progress, Report};

/// A running progress display; stops when dropped or finished.
pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Starts a display when stderr is a terminal; with `force` and no terminal, prints a
    /// plain progress line every two seconds instead (for logs).
    pub fn start(progress: Arc<Progress>, force: bool) -> ProgressDisplay {
        if !std::io::stderr().is_terminal() {
            let task = force.then(|| tokio::spawn(log_lines(progress)));
            return ProgressDisplay { bar: None, task };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} (eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let files = progress.files_total.load(Ordering::Relaxed);
                let total = progress.bytes_total.load(Ordering::Relaxed);
                let rows = progress.rows_out();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                if files == 0 {
                    b.set_message("resolving inputs, sampling schemas");
                } else {
                    b.set_length(total);
                    b.set_position(progress.bytes_read().min(total));
                    b.set_message(format!(
                        "files {}/{} | rows {} ({}/s){}",
                        progress.files_done().min(files),
                        files,
                        HumanCount(rows),
                        HumanCount((rows as f64 / secs) as u64),
                        enrich_status(&progress)
                    ));
                }
                b.tick();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        ProgressDisplay {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// Stops and clears the display.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Live counters of the enrich stages: ` | meta: 1,234 calls, 56 cached, 64 in flight`.
fn enrich_status(progress: &Progress) -> String {
    let Ok(stages) = progress.enrich.lock() else {
        return String::new();
    };
    stages
        .iter()
        .map(|s| {
            format!(
                " | {}: {} calls ({:.0}/s), {} cached, {} retries, {} failed, {} in flight",
                s.name,
                HumanCount(s.calls.load(Ordering::Relaxed)),
                s.rate(),
                HumanCount(s.cache_hits.load(Ordering::Relaxed)),
                HumanCount(s.retries.load(Ordering::Relaxed)),
                HumanCount(s.failed_keys.load(Ordering::Relaxed)),
                s.in_flight.load(Ordering::Relaxed)
            )
        })
        .collect()
}

/// Plain progress lines for a log.
async fn log_lines(progress: Arc<Progress>) {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rows = progress.rows_out();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "progress: {:.0}s files {}/{} bytes {}/{} rows {} ({}/s){}",
            secs,
            progress.files_done(),
            progress.files_total.load(Ordering::Relaxed),
            HumanBytes(
                progress
                    .bytes_read()
                    .min(progress.bytes_total.load(Ordering::Relaxed))
            ),
            HumanBytes(progress.bytes_total.load(Ordering::Relaxed)),
            HumanCount(rows),
            HumanCount((rows as f64 / secs) as u64),
            enrich_status(&progress)
        );
    }
}

/// The one-screen summary printed to stderr at the end of a run.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let rate = report.rows_out as f64 / report.seconds.max(0.001);
    let read = match report.tables_read.as_slice() {
        [] => format!(
            "{} files ({})",
            report.files_read,
            HumanBytes(report.bytes_read)
        ),
        tables => tables.join(", "),
    };
    out.push_str(&format!(
        "sluice: {read} -> {} ({} files, {}, {}) in {:.2}s\n",
        report.output,
        report.files_written,
        report.output_format,
        HumanBytes(report.bytes_written),
        report.seconds
    ));
    // Files that could not be read come first: their rows are in no other count.
    if !report.files_failed.is_empty() {
        out.push_str(&format!(
            "  FAILED: {} input file(s) could not be read{}:\n",
            report.files_failed.len(),
            match report.rows_unread {
                0 => String::new(),
                n => format!(
                    " ({} rows their metadata promised were not read)",
                    HumanCount(n)
                ),
            }
        ));
        for f in report.files_failed.iter().take(10) {
            out.push_str(&format!("    {}\n", f.describe()));
        }
        if report.files_failed.len() > 10 {
            out.push_str(&format!(
                "    ... and {} more (see --report-json)\n",
                report.files_failed.len() - 10
            ));
        }
    }
    out.push_str(&format!(
        "  rows: {} in, {} out ({}/s)",
        HumanCount(report.rows_in),
        HumanCount(report.rows_out),
        HumanCount(rate as u64)
    ));
    if report.rows_rejected > 0 {
        out.push_str(&format!(
            ", {} rejected (see {})",
            HumanCount(report.rows_rejected),
            report
                .rejects_path
                .as_deref()
                .unwrap_or("the rejects folder")
        ));
    }
    if report.rows_skipped > 0 {
        out.push_str(&format!(", {} skipped", HumanCount(report.rows_skipped)));
    }
    if report.rows_removed_by_sql > 0 {
        out.push_str(&format!(
            ", {} removed by SQL",
            HumanCount(report.rows_removed_by_sql)
        ));
    }
    if report.rows_added_by_sql > 0 {
        out.push_str(&format!(
            ", {} added by SQL",
            HumanCount(report.rows_added_by_sql)
        ));
    }
    out.push('\n');
    for e in &report.enrich {
        out.push_str(&format!(
            "  enrich {}: {} keys, {} calls, {} cached, {} retries, {} failed ({} rows); p50 {:.0} ms, p95 {:.0} ms; {:.0} req/s, max {} in flight\n",
            e.name,
            HumanCount(e.distinct_keys),
            HumanCount(e.calls),
            HumanCount(e.cache_hits),
            HumanCount(e.retries),
            HumanCount(e.failed_keys),
            HumanCount(e.failed_rows),
            e.latency_ms_p50,
            e.latency_ms_p95,
            e.requests_per_second,
            e.max_in_flight
        ));
        if !e.failures_by_cause.is_empty() {
            let causes: Vec<String> = e
                .failures_by_cause
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out.push_str(&format!("    failed attempts: {}\n", causes.join(", ")));
        }
        if let Some(waits) = e.waits_line() {
            out.push_str(&format!("    {waits}\n"));
        }
    }
    for d in &report.schema_decisions {
        out.push_str(&format!("  schema: {d}\n"));
    }
    // Dialects the detection was not sure of: the first three, then how many more.
    let doubtful: Vec<_> = report
        .dialects
        .iter()
        .filter(|d| d.doubt.is_some())
        .collect();
    for d in doubtful.iter().take(3) {
        out.push_str(&format!(
            "  warning: {} read as {}, a guess: {} (give --delimiter, --header or --no-header if wrong)\n",
            d.file,
            d.dialect,
            d.doubt.as_deref().unwrap_or_default()
        ));
    }
    if doubtful.len() > 3 {
        out.push_str(&format!(
            "  warning: {} more files' dialects are guesses (see the report's dialects)\n",
            doubtful.len() - 3
        ));
    }
    for f in &report.unsplit_files {
        out.push_str(&format!(
            "  note: {f} has line breaks inside quoted values: read in one piece\n"
        ));
    }
    if !report.skipped_files.is_empty() {
        out.push_str(&format!(
            "  skipped {} file(s) inside input folders: unknown format, or a link out of the folder (e.g. {})\n",
            report.skipped_files.len(),
            report.skipped_files[0]
        ));
    }
    out
}
