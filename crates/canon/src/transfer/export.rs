//! `canon export --output FILE`: `POST …/collections/{c}/exports`, follows
//! the job, downloads its result into a temporary file beside `FILE` (the
//! real file, when `FILE` is a symlink) and renames it into place only once
//! all of it arrived and is on disk; a FIFO or device `FILE` (`/dev/stdout`)
//! is written straight into (see [`super::output`]).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use super::api::{self, Api};
use super::output::Output;
use super::progress::{Reporter, Unit};
use super::{Exit, Target, TransferError, job};

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One record per line, as JSON.
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl Format {
    /// The name the server knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// `canon export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Where it comes from.
    #[command(flatten)]
    pub target: Target,
    /// The file's format.
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    pub format: Format,
    /// Only the records whose top-level field equals a value:
    /// `--filter port=22` (repeat for AND). The value reads as the list
    /// route's `filter[field]` does: a number, `true`, `false` or `null` is
    /// that JSON scalar, `"…"` a JSON string, anything else the text itself.
    #[arg(long, value_name = "FIELD=VALUE", value_parser = parse_filter)]
    pub filter: Vec<(String, serde_json::Value)>,
    /// The file to write. It is replaced only once the whole export has
    /// arrived; until then the data goes to a hidden `.part` file beside it
    /// (beside the file a symlink names: the link stays). A FIFO or a
    /// device (`/dev/stdout`) is written into as the data arrives.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// `FIELD=VALUE` as a filter: the field and the JSON scalar it must equal.
fn parse_filter(arg: &str) -> Result<(String, serde_json::Value), String> {
    let (field, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not FIELD=VALUE"))?;
    let parsed = serde_json::from_str::<serde_json::Value>(raw);
    // A number Canon could not store exactly matches nothing; the list's
    // `filter[field]` refuses it (400), and so does this option.
    let integer = raw.strip_prefix('-').unwrap_or(raw);
    let inexact = is_json_number(raw)
        && (parsed.is_err()
            || (integer.bytes().all(|b| b.is_ascii_digit())
                && raw.parse::<i64>().is_err()
                && raw.parse::<u64>().is_err()));
    if inexact {
        return Err(format!("`{raw}` is a number Canon cannot store exactly"));
    }
    let value = match parsed {
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null)) => v,
        Ok(v @ serde_json::Value::String(_)) if raw.starts_with('"') => v,
        _ => serde_json::Value::String(raw.to_owned()),
    };
    Ok((field.to_owned(), value))
}

/// Whether `s` is written as a JSON number (RFC 8259 §6).
fn is_json_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, rest) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    let rest = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if digits == 0 {
                return false;
            }
            &r[digits..]
        }
        None => rest,
    };
    match rest.strip_prefix(['e', 'E']) {
        Some(exp) => {
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
        }
        None => rest.is_empty(),
    }
}

/// Runs `canon export`: 0 once the file is in place.
pub async fn run(args: ExportArgs) -> Result<Exit, TransferError> {
    let reporter = Reporter::new(args.target.progress);
    let api = Api::new(&args.target)?;
    // The output first: one nobody can write (or a directory) fails before
    // the server does any work.
    let output = Output::open(&args.output)?;

    let mut order = serde_json::json!({"format": args.format.as_str()});
    if !args.filter.is_empty() {
        order["filter"] = args.filter.iter().cloned().collect::<serde_json::Map<_, _>>().into();
    }
    let mut url = api.collection_url(&args.target, "exports");
    let mut hops = 0;
    let response = loop {
        let response = api
            .small_request(Method::POST, url.clone())
            .json(&order)
            .send()
            .await
            .map_err(TransferError::http(format!("asking {url} for an export")))?;
        if !api::repeats_elsewhere(response.status()) || hops == api::MAX_REDIRECTS {
            break response;
        }
        // A renamed collection: the same request, at its new name.
        hops += 1;
        let next = api::location(&api, &response)?;
        reporter.note(&format!("{url} moved to {next}: asking there"));
        url = next;
    };
    let accepted = api::accepted(&api, "the export", response).await?;
    reporter.note(&format!(
        "export accepted: job {} ({})",
        accepted.job.id, accepted.monitor
    ));

    let progress = reporter.phase("export", Unit::Items("records"), accepted.job.progress.total);
    let result = match job::follow(&api, accepted, &progress, None).await {
        Ok(result) => result,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    progress.finish();

    let written_to = output.path().to_owned();
    let (bytes, streamed) = match output {
        Output::File { path, partial } => {
            let file = partial
                .as_file()
                .try_clone()
                .map_err(TransferError::file(partial.path()))?;
            let bytes = download(&api, &reporter, result, file, partial.path(), true).await?;
            partial
                .persist(&path)
                .map_err(|e| TransferError::file(&path)(e.error))?;
            (bytes, false)
        }
        Output::Stream { path, file } => (download(&api, &reporter, result, file, &path, false).await?, true),
    };
    let summary = format!(
        "export of {} written to {} ({} bytes, {})",
        args.target.collection,
        written_to.display(),
        bytes,
        args.format.as_str()
    );
    if streamed {
        // The data may itself be on stdout (`--output /dev/stdout | jq`).
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(Exit::Done)
}

/// Streams the result at `url` into `file` (at `path`), synced to disk when
/// `sync` (a file about to be renamed into place; a FIFO or device is only
/// flushed); returns its length.
async fn download(
    api: &Api,
    reporter: &Reporter,
    url: reqwest::Url,
    file: std::fs::File,
    path: &std::path::Path,
    sync: bool,
) -> Result<u64, TransferError> {
    let mut response = api
        .request(Method::GET, url.clone())
        .send()
        .await
        .map_err(TransferError::http(format!("downloading {url}")))?;
    if response.status() != StatusCode::OK {
        if response.status().is_client_error() || response.status().is_server_error() {
            return Err(api::refusal("the download of the export", response).await);
        }
        return Err(TransferError::Unexpected(format!(
            "the export's result {url} answered {}",
            response.status()
        )));
    }
    let expected = response.content_length();
    let mut file = tokio::fs::File::from_std(file);
    let phase = reporter.phase("download", Unit::Bytes, expected);
    let mut written = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                phase.abandon();
                return Err(TransferError::http(format!("downloading {url}"))(e));
            }
        };
        if let Err(e) = file.write_all(&chunk).await {
            phase.abandon();
            return Err(TransferError::file(path)(e));
        }
        written += chunk.len() as u64;
        phase.inc(chunk.len() as u64);
    }
    if let Some(expected) = expected
        && expected != written
    {
        phase.abandon();
        return Err(TransferError::Unexpected(format!(
            "the export at {url} announced {expected} bytes and sent {written}"
        )));
    }
    // On disk before it takes the final name: a crash right after the
    // rename must not leave an empty or torn file under that name.
    file.flush().await.map_err(TransferError::file(path))?;
    if sync {
        file.sync_all().await.map_err(TransferError::file(path))?;
    }
    phase.finish();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_values_read_as_the_list_reads_them() {
        let value = |arg: &str| parse_filter(arg).map(|(_, v)| v);
        assert_eq!(value("port=22"), Ok(json!(22)));
        assert_eq!(value("port=2.5"), Ok(json!(2.5)));
        assert_eq!(value("up=true"), Ok(json!(true)));
        assert_eq!(value("s=\"22\""), Ok(json!("22")));
        assert_eq!(value("s=SN-1"), Ok(json!("SN-1")));
        assert_eq!(value("s=0x10"), Ok(json!("0x10")));
        assert!(value("port=1e400").is_err());
        assert!(value("port=12345678901234567890123").is_err());
        assert!(value("no-equals-sign").is_err());
    }
}
