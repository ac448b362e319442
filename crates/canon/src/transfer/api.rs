//! The HTTP side: one client (redirects not followed: a 303 is the job
//! monitor's answer, read here), URLs built from the server's base URL,
//! problems read from refusals, and the 202 that accepts a job.

use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::problem::ProblemBody;
use super::{Target, TransferError};

/// The shortest pause between two looks at a job, whatever `Retry-After` says.
pub const MIN_POLL: Duration = Duration::from_millis(100);
/// The longest pause between two looks at a job, whatever `Retry-After` says:
/// a person is watching the progress.
pub const MAX_POLL: Duration = Duration::from_secs(5);
/// The pause when an answer carries no usable `Retry-After` (or an HTTP-date).
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Redirects that repeat a request elsewhere (a renamed collection's 308)
/// followed before the client stops.
pub const MAX_REDIRECTS: usize = 5;
/// How long one small request (a look at the job) may take.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one Canon server, as one caller.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    /// A client for `target`'s server and token.
    pub fn new(target: &Target) -> Result<Self, TransferError> {
        let base =
            Url::parse(&target.url).map_err(|e| TransferError::Unexpected(format!("--url {}: {e}", target.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(TransferError::Unexpected(format!(
                "--url {}: not an http(s) URL",
                target.url
            )));
        }
        let client = canon_server::http_client::builder()
            // The monitor's 303 is read, not followed blindly.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("canon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TransferError::http("cannot set up the HTTP client"))?;
        Ok(Api {
            client,
            base,
            token: target.token.clone(),
        })
    }

    /// `{base}/v1/tenants/{tenant}/collections/{collection}/{leaf}`, each
    /// name percent-encoded as one path segment.
    pub fn collection_url(&self, target: &Target, leaf: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["v1", "tenants", &target.tenant, "collections", &target.collection, leaf]);
        }
        url
    }

    /// A request with the caller's token.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url).bearer_auth(&self.token)
    }

    /// `next` (named by `response`'s `Location`) if it is on the server's
    /// origin; otherwise the refusal to follow it, naming both origins.
    fn same_origin(&self, response: &Response, next: Url) -> Result<Url, TransferError> {
        let (ours, theirs) = (self.base.origin(), next.origin());
        if ours == theirs {
            return Ok(next);
        }
        Err(TransferError::Unexpected(format!(
            "{} answered {} with a Location on another origin ({}, not --url's {}): \
             not followed, it would get the token",
            response.url(),
            response.status(),
            theirs.ascii_serialization(),
            ours.ascii_serialization()
        )))
    }

    /// A small request (not an upload or a download): bounded in time.
    pub fn small_request(&self, method: Method, url: Url) -> RequestBuilder {
        self.request(method, url).timeout(SMALL_REQUEST_TIMEOUT)
    }
}

/// The `Location` of `response`, resolved against the URL it answered, and
/// only if it stays on `--url`'s origin (scheme, host, port): every request
/// carries the bearer token (an import also the file), so a `Location`
/// elsewhere is not followed, as curl does without `--location-trusted`.
pub fn location(api: &Api, response: &Response) -> Result<Url, TransferError> {
    let value = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            TransferError::Unexpected(format!(
                "{} answered {} without a Location",
                response.url(),
                response.status()
            ))
        })?;
    let next = response
        .url()
        .join(value)
        .map_err(|e| TransferError::Unexpected(format!("{} answered the Location {value:?}: {e}", response.url())))?;
    api.same_origin(response, next)
}

/// Whether `status` asks for the same request, method and body, at its
/// `Location` (307, 308: RFC 9110 §15.4.8, §15.4.9).
pub fn repeats_elsewhere(status: StatusCode) -> bool {
    matches!(status, StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT)
}

/// How long to wait before asking again, from `Retry-After` (seconds),
/// kept between [`MIN_POLL`] and [`MAX_POLL`].
pub fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_POLL)
        .clamp(MIN_POLL, MAX_POLL)
}

/// The refusal `response` stands for: its problem body, or its status and
/// text when it carries no problem. `what` names the request ("the import").
pub async fn refusal(what: &str, response: Response) -> TransferError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let problem = serde_json::from_str::<ProblemBody>(&text)
        .ok()
        .filter(|p| p.status.is_some() || p.title.is_some())
        .unwrap_or_else(|| ProblemBody::from_status(status, &text));
    TransferError::Refused {
        what: what.to_owned(),
        problem: Box::new(problem),
    }
}

/// A job as the monitor shows it (the members this client uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// `queued`, `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// How far it got.
    #[serde(default)]
    pub progress: JobProgress,
    /// Why it failed, when it did.
    #[serde(default)]
    pub problem: Option<ProblemBody>,
}

/// A job's `progress`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct JobProgress {
    /// Units done (lines, records).
    #[serde(default)]
    pub done: u64,
    /// Units in all, when the server knows.
    #[serde(default)]
    pub total: Option<u64>,
}

/// Work the server took on: 202 with the job's monitor URL.
#[derive(Debug)]
pub struct Accepted {
    /// The monitor (`…/jobs/{job}`), absolute.
    pub monitor: Url,
    /// The job as it was accepted.
    pub job: Job,
}

/// Reads the answer to a request that starts a job: 202 is [`Accepted`],
/// any other status the refusal of `what`.
pub async fn accepted(api: &Api, what: &str, response: Response) -> Result<Accepted, TransferError> {
    if response.status() != StatusCode::ACCEPTED {
        if response.status().is_client_error() || response.status().is_server_error() {
            return Err(refusal(what, response).await);
        }
        return Err(TransferError::Unexpected(format!(
            "{what}: expected 202 Accepted, the server answered {}",
            response.status()
        )));
    }
    let monitor = location(api, &response)?;
    let job = response
        .json::<Job>()
        .await
        .map_err(TransferError::http(format!("{what}: reading the accepted job")))?;
    Ok(Accepted { monitor, job })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn target(url: &str, tenant: &str, collection: &str) -> Target {
        Target {
            url: url.to_owned(),
            token: "t".to_owned(),
            tenant: tenant.to_owned(),
            collection: collection.to_owned(),
            progress: super::super::progress::ProgressMode::None,
        }
    }

    #[test]
    fn collection_urls_keep_the_base_path_and_encode_names() {
        let t = target("http://h:1/canon/", "acme", "a b");
        let api = Api::new(&t).unwrap();
        assert_eq!(
            api.collection_url(&t, "imports").as_str(),
            "http://h:1/canon/v1/tenants/acme/collections/a%20b/imports"
        );
        let t = target("http://h:1", "acme", "c");
        let api = Api::new(&t).unwrap();
        assert_eq!(
            api.collection_url(&t, "exports").as_str(),
            "http://h:1/v1/tenants/acme/collections/c/exports"
        );
    }

    #[test]
    fn only_http_urls_are_servers() {
        assert!(Api::new(&target("ftp://h/", "a", "c")).is_err());
        assert!(Api::new(&target("not a url", "a", "c")).is_err());
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), DEFAULT_POLL);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Duration::from_secs(2));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0"));
        assert_eq!(retry_after(&headers), MIN_POLL);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&headers), MAX_POLL);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), DEFAULT_POLL);
    }
}
