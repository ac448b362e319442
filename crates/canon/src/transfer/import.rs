//! `canon import FILE`: streams an NDJSON file to
//! `POST …/collections/{c}/imports`, follows the job, prints its report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;

use super::api::{self, Api};
use super::problem::ProblemBody;
use super::progress::{Reporter, Unit};
use super::upload::{Seen, body_stream};
use super::{Exit, Target, TransferError, job};

/// Failed lines the summary lists (`--json` prints every one the report has).
pub const SHOWN_FAILURES: usize = 20;

/// `canon import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The NDJSON file: one record's data (a JSON object) per line.
    pub file: PathBuf,
    /// Where it goes.
    #[command(flatten)]
    pub target: Target,
    /// Print the job's report as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The import job's result (the members this client shows).
#[derive(Debug, Default, Deserialize)]
pub struct ImportReport {
    /// The collection written to (its name when the import ended).
    #[serde(default)]
    pub collection: String,
    /// Lines read, blank ones included.
    #[serde(default)]
    pub lines: u64,
    /// Records created.
    #[serde(default)]
    pub created: u64,
    /// Lines that failed.
    #[serde(default)]
    pub failed: u64,
    /// The first failed lines.
    #[serde(default)]
    pub failures: Vec<LineFailure>,
}

/// One failed line of an [`ImportReport`].
#[derive(Debug, Default, Deserialize)]
pub struct LineFailure {
    /// Its number, from 1.
    pub line: u64,
    /// Why it failed.
    #[serde(default)]
    pub problem: ProblemBody,
}

impl ImportReport {
    /// The summary for a person: counts, then the first failed lines.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "import into {}: {} lines, {} created, {} failed\n",
            self.collection, self.lines, self.created, self.failed
        );
        for failure in self.failures.iter().take(SHOWN_FAILURES) {
            out.push_str(&format!("line {}: {}\n", failure.line, failure.problem));
        }
        let shown = self.failures.len().min(SHOWN_FAILURES) as u64;
        if self.failed > shown {
            out.push_str(&format!(
                "… and {} more failed lines (--json prints the report: it lists the first 1000)\n",
                self.failed - shown
            ));
        }
        out
    }
}

/// Runs `canon import`: 0 when every line became a record, 1 when some
/// failed (the report says which).
pub async fn run(args: ImportArgs) -> Result<Exit, TransferError> {
    let reporter = Reporter::new(args.target.progress);
    let api = Api::new(&args.target)?;
    let mut url = api.collection_url(&args.target, "imports");
    let mut hops = 0;
    let (response, seen) = loop {
        let (response, seen) = upload(&api, &reporter, &args.file, &url).await?;
        if !api::repeats_elsewhere(response.status()) || hops == api::MAX_REDIRECTS {
            break (response, seen);
        }
        // A renamed collection: the same upload, at its new name.
        hops += 1;
        let next = api::location(&api, &response)?;
        reporter.note(&format!("{url} moved to {next}: sending the file there"));
        url = next;
    };
    let accepted = api::accepted(&api, "the import", response).await?;
    reporter.note(&format!(
        "import accepted: job {} ({})",
        accepted.job.id, accepted.monitor
    ));

    let lines = seen.lines();
    let progress = reporter.phase("import", Unit::Items("lines"), lines);
    let result = match job::follow(&api, accepted, &progress, lines).await {
        Ok(result) => result,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    progress.finish();

    let response = api
        .small_request(Method::GET, result.clone())
        .send()
        .await
        .map_err(TransferError::http(format!("reading the report at {result}")))?;
    if response.status() != StatusCode::OK {
        return Err(api::refusal("reading the import's report", response).await);
    }
    let text = response
        .text()
        .await
        .map_err(TransferError::http(format!("reading the report at {result}")))?;
    let report: ImportReport = serde_json::from_str(&text)
        .map_err(|e| TransferError::Unexpected(format!("the report at {result} is not an import report: {e}")))?;
    if args.json {
        println!("{}", text.trim_end());
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.failed > 0 {
        Exit::LinesFailed
    } else {
        Exit::Done
    })
}

/// Sends `file` to `url` as an import, its progress shown as the `upload`
/// phase; returns the answer and what the upload saw of the file.
async fn upload(
    api: &Api,
    reporter: &Reporter,
    file: &Path,
    url: &Url,
) -> Result<(Response, Arc<Seen>), TransferError> {
    let handle = tokio::fs::File::open(file).await.map_err(TransferError::file(file))?;
    let metadata = handle.metadata().await.map_err(TransferError::file(file))?;
    // A pipe or a device has no length: then the upload is chunked, and
    // its bar has no end.
    let length = metadata.is_file().then_some(metadata.len());

    let phase = reporter.phase("upload", Unit::Bytes, length);
    let seen = Arc::new(Seen::default());
    let body = reqwest::Body::wrap_stream(body_stream(handle, length, phase.clone(), seen.clone()));
    let mut request = api
        .request(Method::POST, url.clone())
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(body);
    if let Some(length) = length {
        // Declared, so the server refuses a file over its limit (413) before
        // a byte is stored.
        request = request.header(CONTENT_LENGTH, length);
    }
    match request.send().await {
        Ok(response) => {
            if response.status() == StatusCode::ACCEPTED {
                phase.finish();
            } else {
                phase.abandon();
            }
            Ok((response, seen))
        }
        Err(e) => {
            phase.abandon();
            Err(TransferError::http(format!("uploading {} to {url}", file.display()))(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_and_lists_failed_lines() {
        let report: ImportReport = serde_json::from_value(serde_json::json!({
            "collection": "devices", "lines": 3, "created": 2, "failed": 1, "failures_omitted": 0,
            "failures": [{"line": 2, "pointer": "/data/port", "problem": {
                "type": "/problems/schema-violation", "title": "t", "status": 400, "detail": "d",
                "errors": [{"pointer": "/data/port", "detail": "\"x\" is not of type \"integer\""}]}}]
        }))
        .unwrap();
        assert_eq!(
            report.summary(),
            "import into devices: 3 lines, 2 created, 1 failed\n\
             line 2: 400 schema-violation: /data/port: \"x\" is not of type \"integer\"\n"
        );
    }

    #[test]
    fn the_summary_says_how_many_failures_it_leaves_out() {
        let failures: Vec<_> = (1..=1000)
            .map(|n| serde_json::json!({"line": n, "problem": {"status": 400, "detail": "no"}}))
            .collect();
        let report: ImportReport = serde_json::from_value(serde_json::json!({
            "collection": "c", "lines": 5000, "created": 0, "failed": 5000, "failures": failures
        }))
        .unwrap();
        let summary = report.summary();
        assert_eq!(summary.lines().count(), 1 + SHOWN_FAILURES + 1, "{summary}");
        assert!(
            summary.ends_with("… and 4980 more failed lines (--json prints the report: it lists the first 1000)\n")
        );
    }
}
