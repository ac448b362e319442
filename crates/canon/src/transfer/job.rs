//! Following a job's monitor until it ends: 200 while it is queued or
//! running (wait `Retry-After`, bounded), 200 failed or canceled (the job's
//! problem), 303 See Other to its result once it succeeded.

use reqwest::{Method, StatusCode, Url};

use super::TransferError;
use super::api::{self, Accepted, Api, Job};
use super::progress::Phase;

/// Consecutive looks at the monitor that may fail for passing reasons (the
/// connection, 429, 502, 503, 504) before the client gives up: the job goes
/// on without us, and its URL is in the error.
const PASSING_FAILURES: u32 = 10;

/// The `Prefer: wait=N` every look at the monitor sends (RFC 7240 §4.3):
/// the server answers when the job ends, or after this many seconds with
/// its progress, so the client learns of the end at once and still shows
/// progress every second.
const WAIT_SECONDS: u64 = 1;

/// Whether the monitor honoured the wait (`Preference-Applied: wait=…`):
/// then it already waited, and the next look goes at once.
fn waited(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all("preference-applied")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split('=')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case("wait"))
        })
}

/// Follows `accepted`'s monitor, showing the job's progress in `phase`
/// (of `local_total` units when the server does not know its total), and
/// returns the result's URL once the job succeeded.
pub async fn follow(
    api: &Api,
    accepted: Accepted,
    phase: &Phase,
    local_total: Option<u64>,
) -> Result<Url, TransferError> {
    let Accepted { monitor, job } = accepted;
    // The first look goes at once: it asks the monitor to wait, and a
    // monitor that does not says when to look again (`Retry-After`).
    let mut pause = std::time::Duration::ZERO;
    let mut job = job;
    let mut failures = 0;
    loop {
        show(phase, &job, local_total);
        match job.status.as_str() {
            "failed" | "canceled" => {
                return Err(TransferError::JobEnded {
                    job: monitor.to_string(),
                    status: job.status,
                    problem: job.problem.map(Box::new),
                });
            }
            // The monitor answers 303 for a succeeded job; a 200 saying so
            // (a proxy, an older server) still means the result is there.
            "succeeded" => return Ok(result_url(&monitor)),
            _ => {}
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let look = api
            .small_request(Method::GET, monitor.clone())
            .header("prefer", format!("wait={WAIT_SECONDS}"));
        let response = match look.send().await {
            Ok(response) => response,
            Err(e) => {
                failures += 1;
                if failures >= PASSING_FAILURES {
                    return Err(TransferError::http(format!("following the job at {monitor}"))(e));
                }
                pause = api::DEFAULT_POLL;
                continue;
            }
        };
        let status = response.status();
        if status == StatusCode::SEE_OTHER {
            // Done: a finished bar says so even if the last look was older.
            if let Some(total) = local_total.or(job.progress.total) {
                phase.set_done(total);
            }
            return api::location(api, &response);
        }
        if passing(status) && failures + 1 < PASSING_FAILURES {
            failures += 1;
            pause = api::retry_after(response.headers());
            continue;
        }
        if status.is_client_error() || status.is_server_error() {
            return Err(api::refusal(&format!("following the job at {monitor}"), response).await);
        }
        if status != StatusCode::OK {
            return Err(TransferError::Unexpected(format!(
                "the job's monitor {monitor} answered {status}"
            )));
        }
        failures = 0;
        pause = if waited(response.headers()) {
            std::time::Duration::ZERO
        } else {
            api::retry_after(response.headers())
        };
        job = response
            .json::<Job>()
            .await
            .map_err(TransferError::http(format!("reading the job at {monitor}")))?;
    }
}

/// An answer that says "not now" rather than "no".
fn passing(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Shows `job`'s progress in `phase`.
fn show(phase: &Phase, job: &Job, local_total: Option<u64>) {
    if let Some(total) = job.progress.total.or(local_total) {
        phase.set_total(total);
    }
    phase.set_done(job.progress.done);
}

/// `{monitor}/result`.
fn result_url(monitor: &Url) -> Url {
    let mut url = monitor.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("result");
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_is_below_the_monitor() {
        let monitor = Url::parse("http://h/v1/tenants/a/jobs/j1").unwrap();
        assert_eq!(result_url(&monitor).as_str(), "http://h/v1/tenants/a/jobs/j1/result");
    }

    #[test]
    fn only_overload_and_gateways_are_passing() {
        assert!(passing(StatusCode::SERVICE_UNAVAILABLE));
        assert!(passing(StatusCode::TOO_MANY_REQUESTS));
        assert!(!passing(StatusCode::NOT_FOUND));
        assert!(!passing(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
