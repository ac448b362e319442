//! `canon import` and `canon export`: a client of a running Canon server
//! that moves a collection's records in or out as a job, with progress for
//! the person watching.
//!
//! Both commands speak only HTTP: they post the job (202), follow its
//! monitor (`Retry-After` paced, the 303 followed by hand so the monitor's
//! meaning stays visible), and then fetch the result. Nothing here reaches
//! into the server's crates: a newer or older server is talked to the same
//! way.

pub mod api;
pub mod export;
pub mod import;
pub mod job;
pub mod output;
pub mod problem;
pub mod progress;
pub mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use self::problem::ProblemBody;
use self::progress::ProgressMode;

/// Where a transfer goes: the server, the caller, the collection.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The server's base URL.
    #[arg(long, env = "CANON_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The bearer token (an API key, or the operator token).
    #[arg(long, env = "CANON_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The tenant's name.
    #[arg(long)]
    pub tenant: String,
    /// The collection's name.
    #[arg(long)]
    pub collection: String,
    /// How to show progress (on stderr).
    #[arg(long, value_enum, env = "CANON_PROGRESS", default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// How `canon import` and `canon export` end: the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything was done (every line imported; the file written).
    Done,
    /// 1: the import ran, but some lines failed (the report says which).
    LinesFailed,
    /// 2: the server refused the request, or the job failed or was
    /// canceled (the problem is printed). clap's own usage errors also
    /// exit 2.
    Refused,
    /// 3: the transfer could not finish: the file could not be read or
    /// written, the server could not be reached, or it answered something
    /// this client does not understand.
    Broken,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(match exit {
            Exit::Done => 0,
            Exit::LinesFailed => 1,
            Exit::Refused => 2,
            Exit::Broken => 3,
        })
    }
}

/// The exit statuses, for `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  done: every line imported (export: the file written)
  1  the import ran, but some lines failed (the report lists them)
  2  refused: the server answered with a problem, or the job failed or was canceled
     (the problem is printed; usage errors exit 2 too)
  3  not finished: the file could not be read or written, the server could not be
     reached, or its answer was not understood";

/// Why a transfer stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The server answered a request with a problem (4xx/5xx).
    #[error("{what} was refused: {problem}")]
    Refused {
        /// What was asked, e.g. "the import".
        what: String,
        /// The problem it answered with.
        problem: Box<ProblemBody>,
    },
    /// The job ended failed or canceled.
    #[error("job {job} ended {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    JobEnded {
        /// The job's monitor URL.
        job: String,
        /// `failed` or `canceled`.
        status: String,
        /// Why, when the job says.
        problem: Option<Box<ProblemBody>>,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{context}: {source}")]
    Http {
        /// What was being done.
        context: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The server answered something this client cannot use.
    #[error("{0}")]
    Unexpected(String),
}

impl TransferError {
    /// The exit status this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            TransferError::Refused { .. } | TransferError::JobEnded { .. } => Exit::Refused,
            TransferError::File { .. } | TransferError::Http { .. } | TransferError::Unexpected(_) => Exit::Broken,
        }
    }

    /// An error reading or writing the file `path`.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TransferError {
        let path = path.into();
        move |source| TransferError::File { path, source }
    }

    /// A transport error while doing `context`.
    pub fn http(context: impl Into<String>) -> impl FnOnce(reqwest::Error) -> TransferError {
        let context = context.into();
        move |source| TransferError::Http { context, source }
    }
}

/// The exit status of a finished transfer, its error printed first.
pub fn finish(result: Result<Exit, TransferError>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(error) => report_error(&error).into(),
    }
}

/// Prints `error` for a person (problems in full) and returns its exit status.
pub fn report_error(error: &TransferError) -> Exit {
    match error {
        TransferError::Refused { what, problem } => {
            eprintln!("canon: {what} was refused");
            eprint!("{}", problem.describe("  "));
        }
        TransferError::JobEnded { job, status, problem } => {
            eprintln!("canon: the job ended {status} ({job})");
            if let Some(problem) = problem {
                eprint!("{}", problem.describe("  "));
            }
        }
        TransferError::Http { context, source } => {
            // reqwest's Display stops at the outermost error; the cause
            // (connection refused, reset, …) is what a person needs.
            let mut text = source.to_string();
            let mut cause = std::error::Error::source(source);
            while let Some(inner) = cause {
                text.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            eprintln!("canon: {context}: {text}");
        }
        other => eprintln!("canon: {other}"),
    }
    error.exit()
}
