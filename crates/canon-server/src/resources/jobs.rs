//! Jobs: the monitor of work accepted with 202 (`…/jobs/{job}`), its
//! result (`…/jobs/{job}/result`) and the tenant's list (`…/jobs`).
//!
//! The monitor answers 200 with the job while it is queued or running
//! (with `Retry-After`), failed or canceled, and 303 See Other to its result
//! once it succeeded; DELETE cancels unfinished work (409 once finished).
//! A job is kept, result included, for [`JOB_RESULT_RETENTION`] after it
//! finished, then answers 410. Under a deleted tenant everything answers
//! 410 except, for the operator, the tenant's deletion job and its result
//! (docs/jobs.md, "Tenant deletion").

use canon_http::Problem;
use canon_http::access::Principal;
use canon_http::body::{ChunkSource, StreamError, Streamed};
use canon_http::flow::{BoxFuture, Existence, Found, Input, NO_STORE, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use canon_store::{JOB_RESULT_RETENTION, Job, JobKind, JobStatus, Lookup, now_millis};
use http::Method;

use super::{Cx, Stop, settle, still_there, tenants};
use crate::error::store_problem;
use crate::input::Query;
use crate::listing::{self, Listed};
use crate::render;
use crate::wire::ExportFormat;

/// How long a client should wait before looking at unfinished work again.
pub const POLL_SECONDS: u64 = 1;

/// The longest a monitor holds a `GET` that asked `Prefer: wait=N` (RFC
/// 7240 §4.3): a waiting request holds an in-flight slot, so the wait is
/// bounded well below any client's or proxy's timeout.
pub const MAX_WAIT_SECONDS: u64 = 10;

/// How often a waiting monitor looks at the store when no signal comes (a
/// job another process runs ends without telling this one).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The seconds of a `Prefer: wait=N` on the request, capped at
/// [`MAX_WAIT_SECONDS`]; `None` without one. A malformed value is ignored,
/// as RFC 7240 asks of preferences a server cannot use.
fn preferred_wait(head: &http::request::Parts) -> Option<u64> {
    canon_http::flow::preferences(head)
        .find_map(|(name, value)| {
            if !name.eq_ignore_ascii_case("wait") {
                return None;
            }
            (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
        })
        .map(|seconds| seconds.min(MAX_WAIT_SECONDS))
}

/// The job named in the path, or the stop it means (404 for another
/// tenant's or an unknown job, 410 once purged, 410 under a deleted
/// tenant but for [`deletion_job`]).
async fn load_job(cx: &Cx) -> Result<Job, Stop> {
    let tenant = match cx.tenant().await? {
        Lookup::Found(tenant) => tenant,
        Lookup::Gone => return deletion_job(cx).await,
        missing => return Err(super::absent(&missing)),
    };
    let job = cx
        .app
        .store
        .job(&tenant.id, cx.param("job"))
        .await
        .map_err(store_problem)?;
    match job {
        Lookup::Found(job) => Ok(job),
        Lookup::Gone => Err(Stop::At(Existence::Gone)),
        Lookup::Missing => Err(Stop::At(Existence::Missing)),
    }
}

/// The one thing that answers under a deleted tenant: its deletion's job,
/// for the operator, who started it and follows it here (monitor, result,
/// cancel) until the job expires and the name is released. Anything else
/// under the tenant, and anyone else, meets the tenant's tombstone (410);
/// its members cannot even authenticate any more.
async fn deletion_job(cx: &Cx) -> Result<Job, Stop> {
    let gone = Stop::At(Existence::ContainerGone);
    if !matches!(cx.principal, Some(Principal::Operator { .. })) {
        return Err(gone);
    }
    let store = &cx.app.store;
    let Some(deletion) = store.tenant_deletion(cx.param("tenant")).await.map_err(store_problem)? else {
        return Err(gone);
    };
    match store
        .job(&deletion.tenant_id, cx.param("job"))
        .await
        .map_err(store_problem)?
    {
        Lookup::Found(job) if job.kind == JobKind::DeleteTenant => Ok(job),
        _ => Err(gone),
    }
}

/// The 202 for `job`, just queued under the tenant `tenant`: where to
/// follow it, and the job. Wakes an idle worker of this process at once.
pub fn accepted(app: &crate::state::App, tenant: &str, job: &Job) -> Success {
    app.jobs.queued();
    Success::Accepted {
        location: render::job_location(tenant, &job.id),
        representation: job_representation(job),
    }
}

/// A job as the monitor shows it: `Retry-After` while it is unfinished.
pub fn job_representation(job: &Job) -> Representation {
    let mut rep = Representation::json(&render::job(job));
    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
        rep.retry_after = Some(POLL_SECONDS);
    }
    // A job changes by itself: never served from a cache.
    rep.cache_control = Some(NO_STORE);
    rep
}

/// `GET, DELETE /v1/tenants/{tenant}/jobs/{job}`.
///
/// A `GET` with `Prefer: wait=N` is answered as soon as the job ends, or
/// after at most N seconds (capped at [`MAX_WAIT_SECONDS`]) with the job as
/// it stands then, and `Preference-Applied: wait=N`: a client follows a job
/// without polling on a timer, and learns of its end at once.
pub struct OneJob {
    cx: Cx,
    found: Option<Job>,
    /// The wait the client prefers, for a `GET`.
    wait: Option<u64>,
}

impl OneJob {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            found: None,
            wait: None,
        }
    }

    /// The job, once it ended or the preferred wait is over: looked at
    /// again on every end this process signals, and every [`WAIT_POLL`].
    async fn load_waiting(&self) -> Result<Job, Stop> {
        let deadline = self
            .wait
            .map(|seconds| tokio::time::Instant::now() + std::time::Duration::from_secs(seconds));
        loop {
            let signal = self.cx.app.jobs.finish_signal().notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            let job = load_job(&self.cx).await?;
            let unfinished = matches!(job.status, JobStatus::Queued | JobStatus::Running);
            match deadline {
                Some(deadline) if unfinished && tokio::time::Instant::now() < deadline => {
                    let poll = tokio::time::Instant::now() + WAIT_POLL;
                    tokio::select! {
                        () = &mut signal => {}
                        () = tokio::time::sleep_until(poll.min(deadline)) => {}
                    }
                }
                _ => return Ok(job),
            }
        }
    }
}

impl Resource for OneJob {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        if matches!(input.head.method, Method::GET | Method::HEAD) {
            self.wait = preferred_wait(input.head);
        }
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let job = self.load_waiting().await?;
                    let existence = if job.status == JobStatus::Succeeded {
                        let monitor = render::job_location(self.cx.param("tenant"), &job.id);
                        Existence::SeeOther(format!("{monitor}/result"))
                    } else {
                        Existence::Found(Found::default())
                    };
                    self.found = Some(job);
                    Ok(existence)
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let job = still_there(self.found.take())?;
            if self.cx.method == Method::DELETE {
                let canceled = self
                    .cx
                    .app
                    .store
                    .cancel_job(&job.tenant_id, &job.id, now_millis(), JOB_RESULT_RETENTION)
                    .await
                    .map_err(store_problem)?;
                self.cx.app.jobs.finished();
                return Ok(Success::Ok(job_representation(&canceled)));
            }
            let mut rep = job_representation(&job);
            rep.preference_applied = self.wait.map(|seconds| format!("wait={seconds}"));
            Ok(Success::Ok(rep))
        })
    }
}

/// `GET /v1/tenants/{tenant}/jobs/{job}/result`: what a succeeded job
/// produced (404 while it has not succeeded): an export's file, streamed
/// from the store chunk by chunk, or a JSON report. Either never changes
/// once the job succeeded, so its tag is the job's and the result's length.
pub struct JobResult {
    cx: Cx,
    /// The succeeded job, its result's validators and, for an export, its format.
    found: Option<(Job, Validators, Option<ExportFormat>)>,
}

impl JobResult {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self { cx, found: None }
    }
}

/// The file an export job wrote, when `job` is one: its format.
fn export_format(job: &Job) -> Option<ExportFormat> {
    (job.kind == JobKind::Export)
        .then(|| serde_json::from_value(job.params["format"].clone()).ok())
        .flatten()
}

impl Resource for JobResult {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let job = load_job(&self.cx).await?;
                    if job.status != JobStatus::Succeeded {
                        return Ok(Existence::Missing);
                    }
                    let format = export_format(&job);
                    let validators = result_validators(&job);
                    let found = Found {
                        validators: validators.clone(),
                        media: Some(format.map_or(MediaType::Json, |f| crate::export::file_type(f).0)),
                        cache_control: Some(RESULT_CACHE),
                        ..Found::default()
                    };
                    self.found = Some((job, validators, format));
                    Ok(Existence::Found(found))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let (job, validators, format) = still_there(self.found.take())?;
            let mut rep = match format {
                Some(format) => {
                    let (media, extension) = crate::export::file_type(format);
                    let collection = job.params["collection"].as_str().unwrap_or("export");
                    let chunks = ResultChunks {
                        store: self.cx.app.store.clone(),
                        tenant_id: job.tenant_id.clone(),
                        job_id: job.id.clone(),
                        seq: 0,
                        chunks: job.result_chunks,
                    };
                    let streamed = Streamed {
                        chunks: Box::new(chunks),
                        length: u64::try_from(job.result_bytes).ok(),
                    };
                    let mut rep = Representation::streamed(media, streamed);
                    rep.content_disposition =
                        Some(format!("attachment; filename=\"{collection}-{}.{extension}\"", job.id));
                    rep
                }
                None => Representation::json(&job.result.unwrap_or_else(|| serde_json::json!({}))),
            };
            rep.validators = validators;
            rep.cache_control = Some(RESULT_CACHE);
            Ok(Success::Ok(rep))
        })
    }
}

/// A result's validators: it never changes once the job succeeded, so the
/// job's id and the result's length name it for good.
fn result_validators(job: &Job) -> Validators {
    Validators::new(
        EntityTag::strong(format!("{}.{}", job.id, job.result_bytes)),
        render::system_time(job.finished_at.unwrap_or(job.created_at)),
    )
}

/// A result never changes, and is the caller's own.
const RESULT_CACHE: &str = "private, max-age=3600";

/// A job's result chunks, read from the store one at a time as the client
/// takes them: memory holds one chunk whatever the file's size.
struct ResultChunks {
    store: std::sync::Arc<dyn canon_store::Store>,
    tenant_id: String,
    job_id: String,
    seq: i64,
    chunks: i64,
}

impl ChunkSource for ResultChunks {
    fn next_chunk(&mut self) -> BoxFuture<'_, Option<Result<bytes::Bytes, StreamError>>> {
        Box::pin(async move {
            if self.seq >= self.chunks {
                return None;
            }
            let read = self
                .store
                .read_job_result(&self.tenant_id, &self.job_id, self.seq)
                .await;
            self.seq += 1;
            Some(match read {
                Ok(Some(chunk)) => Ok(bytes::Bytes::from(chunk)),
                // Purged while it was being sent.
                Ok(None) => Err(StreamError(format!(
                    "result chunk {} of job {} is gone",
                    self.seq - 1,
                    self.job_id
                ))),
                Err(e) => Err(StreamError(e.to_string())),
            })
        })
    }
}

/// `GET /v1/tenants/{tenant}/jobs`: the tenant's jobs, oldest first.
pub struct Jobs {
    cx: Cx,
    page: Option<listing::Paging>,
    listed: Option<Listed>,
}

impl Jobs {
    /// For `cx`.
    pub fn new(cx: Cx) -> Self {
        Self {
            cx,
            page: None,
            listed: None,
        }
    }
}

impl Resource for Jobs {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        self.cx.remember(&input);
        let q = Query::parse(&input.head.uri, &["limit", "cursor"])?;
        self.page = Some(listing::page_request(&q)?);
        Ok(())
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async move {
            settle(
                async {
                    let tenant = tenants::require(&self.cx).await?;
                    let paging = still_there(self.page.take())?;
                    let (page, cursors) = paging.open(&self.cx.app, &["jobs", &tenant.id]).await?;
                    let page = self
                        .cx
                        .app
                        .store
                        .list_jobs(&tenant.id, page)
                        .await
                        .map_err(store_problem)?;
                    let found = Listed::from_page(page, render::job, &cursors).keep(&mut self.listed);
                    Ok(Existence::Found(found))
                }
                .await,
            )
        })
    }

    fn execute(&mut self, media: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            let listed = still_there(self.listed.take())?;
            Ok(Success::Ok(listed.render(media, &self.cx.uri)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(values: &[&str]) -> Option<u64> {
        let mut request = http::Request::builder();
        for value in values {
            request = request.header("prefer", *value);
        }
        preferred_wait(&request.body(()).expect("request").into_parts().0)
    }

    #[test]
    fn prefer_wait_is_read_capped_and_ignored_when_malformed() {
        assert_eq!(wait_of(&[]), None);
        assert_eq!(wait_of(&["wait=3"]), Some(3));
        assert_eq!(wait_of(&["respond-async, WAIT = \"2\""]), Some(2));
        assert_eq!(wait_of(&["return=minimal", "wait=0"]), Some(0));
        assert_eq!(wait_of(&["wait=3600"]), Some(MAX_WAIT_SECONDS));
        assert_eq!(wait_of(&["wait=99999999999999999999"]), None);
        assert_eq!(wait_of(&["wait=-1"]), None);
        assert_eq!(wait_of(&["wait=1.5"]), None);
        assert_eq!(wait_of(&["wait"]), None);
        assert_eq!(wait_of(&["waiting=4"]), None);
    }
}
