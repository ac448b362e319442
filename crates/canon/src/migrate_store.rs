//! `canon migrate-store --from sqlite://PATH --to postgres://URL`: copies a
//! stopped server's SQLite store into an empty PostgreSQL database and
//! verifies it (`canon_store::migrate`), with progress on stderr and the
//! summary on stdout.

use std::process::ExitCode;
use std::time::Duration;

use canon_store::migrate::{self, MigrateError, MigrateOptions, Progress, Summary};
use clap::Args;

use crate::transfer::progress::{Phase, ProgressMode, Reporter, Unit, per_second};

/// Exit status: 0 copied and verified; 1 refused or failed (nothing usable
/// on the target); 2 copied, but the counts differ.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 copied and verified; 1 refused (server running on the source, \
source schema not current, target not empty) or failed; 2 copied but the verification found different counts.\n\
Stop every `canon serve` on the source first. Devices' headers are copied sealed: run the new server with the same \
CANON_SECRET_KEY.";

/// `canon migrate-store`'s arguments.
#[derive(Args, Debug)]
pub struct MigrateStoreArgs {
    /// The SQLite store to copy: sqlite://PATH (or a path). No server may run on it.
    #[arg(long)]
    pub from: String,
    /// The empty PostgreSQL database to fill: postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "CANON_MIGRATE_TO", hide_env_values = true)]
    pub to: String,
    /// Rows per batch (one insert, one transaction).
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,
    /// How to show progress (on stderr).
    #[arg(long, value_enum, env = "CANON_PROGRESS", default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// Feeds the copy's progress to a phase of the CLI's reporter.
struct Bar {
    reporter: Reporter,
    phase: std::sync::Mutex<Option<Phase>>,
}

impl Progress for Bar {
    fn begin(&self, total: u64) {
        let phase = self.reporter.phase("copy", Unit::Items("rows"), Some(total));
        if let Ok(mut slot) = self.phase.lock() {
            *slot = Some(phase);
        }
    }

    fn copied(&self, _table: &str, rows: u64) {
        if let Ok(slot) = self.phase.lock()
            && let Some(phase) = slot.as_ref()
        {
            phase.inc(rows);
        }
    }

    // The phase's last line is over the copy alone, as the summary's rate:
    // the verification that follows is no part of it.
    fn done(&self, _rows: u64, took: Duration) {
        if let Ok(mut slot) = self.phase.lock()
            && let Some(phase) = slot.take()
        {
            phase.finish_after(took);
        }
    }
}

impl Bar {
    /// Clears a phase that broke off (an error follows).
    fn abandon(&self) {
        if let Ok(mut slot) = self.phase.lock()
            && let Some(phase) = slot.take()
        {
            phase.abandon();
        }
    }
}

/// Runs the command.
pub async fn run(args: MigrateStoreArgs) -> ExitCode {
    if !crate::is_postgres(&args.to) {
        eprintln!("canon: --to must be a postgres:// URL");
        return ExitCode::FAILURE;
    }
    let from = match crate::sqlite_path(&args.from) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("canon: --from: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = Bar {
        reporter: Reporter::new(args.progress),
        phase: std::sync::Mutex::new(None),
    };
    let options = MigrateOptions {
        batch_rows: args.batch_rows.max(1),
        ..MigrateOptions::default()
    };
    bar.reporter
        .note(&format!("moving {} to {}", from.display(), crate::redacted(&args.to)));
    match migrate::sqlite_to_postgres(&from, &args.to, options, &bar).await {
        Ok(summary) => {
            print_summary(&summary);
            if summary.mismatches().is_empty() {
                println!("verified: every count matches; start `canon serve --database <the PostgreSQL URL>`");
                ExitCode::SUCCESS
            } else {
                eprintln!("canon: the counts differ (marked above): do not switch to the target");
                ExitCode::from(2)
            }
        }
        Err(e) => {
            bar.abandon();
            eprintln!("canon: {e}");
            if matches!(e, MigrateError::Target(_)) {
                eprintln!("canon: the target may hold part of the copy: drop and recreate it before trying again");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_summary(summary: &Summary) {
    println!("{:<20} {:>12} {:>12}", "table", "sqlite", "postgres");
    for count in &summary.tables {
        let mark = if count.source == count.target { "" } else { "  MISMATCH" };
        println!("{:<20} {:>12} {:>12}{mark}", count.table, count.source, count.target);
    }
    let differing: Vec<_> = summary
        .records_by_tenant
        .iter()
        .filter(|c| c.source != c.target)
        .collect();
    println!(
        "records per tenant: {} tenants, {} differing",
        summary.records_by_tenant.len(),
        differing.len()
    );
    for count in differing {
        println!(
            "  tenant {}: {} in sqlite, {} in postgres  MISMATCH",
            count.table, count.source, count.target
        );
    }
    // The rate is over the copy alone, as the progress line's; the whole
    // move (opening, migrating the target, counting, verifying) is apart.
    println!(
        "copied {} rows in {:.1} s ({} rows/s); {:.1} s in all, with the target's migrations and the \
         verification; cache generation now {}",
        summary.rows,
        summary.copying.as_secs_f64(),
        per_second(summary.rows, summary.copying),
        summary.elapsed.as_secs_f64(),
        summary.generation
    );
    for (table, why) in migrate::NOT_COPIED {
        println!("not copied: {table}: {why}");
    }
}
