//! Long device commands (`POST …/devices/{device}/commands`, 202): the job
//! that relays one request to the device and keeps its answer as the job's
//! result (docs/devices.md, "Long commands").
//!
//! A command is sent at most once: the job records that it is about to
//! send before it sends, and a job taken over after its worker died
//! mid-command fails instead of sending again (whether the device acted on
//! it is unknown; a device command such as a reboot must not run twice).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use canon_http::flow::StreamedBody;
use canon_http::{Problem, ProblemKind};
use canon_store::{Job, Lookup, Progress, now_millis};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use serde_json::{Map, Value, json};

use super::forward::Outgoing;
use crate::state::App;
use crate::worker::{Step, lease_until, save};

/// The largest device answer a command keeps (its body, as the result).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A command's methods.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

fn failed(kind: ProblemKind, detail: impl Into<String>) -> Step {
    Step::Failed(Problem::new(kind, detail))
}

/// Runs the command `job` holds under `owner`.
pub(crate) async fn run(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    if job.checkpoint.as_ref().is_some_and(|c| c["sent"] == true) {
        return Err(failed(
            ProblemKind::BadGateway,
            "The command was sent, and its worker stopped before the device's answer came: whether the device \
             acted on it is unknown, and Canon does not send a command twice.",
        ));
    }
    let p = &job.params;
    let name = p["device"].as_str().unwrap_or_default();
    let device = match app.store.device(&job.tenant_id, name).await? {
        Lookup::Found(d) if p["device_id"].as_str() == Some(d.id.as_str()) => d,
        _ => {
            return Err(failed(
                ProblemKind::Gone,
                format!("The device {name} was deleted before its command ran."),
            ));
        }
    };
    let method = Method::from_bytes(p["method"].as_str().unwrap_or("GET").as_bytes())
        .map_err(|_| failed(ProblemKind::Internal, "The command's method is not valid."))?;
    let (path, query) = match p["path"].as_str().unwrap_or_default().split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (p["path"].as_str().unwrap_or_default().to_owned(), None),
    };
    let url = super::endpoint::target(&device.endpoint, &path, query.as_deref())
        .map_err(|why| failed(ProblemKind::BadGateway, format!("The device's stored endpoint {why}.")))?;
    let mut headers = HeaderMap::new();
    let body = match p.get("body") {
        Some(body) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            Some(StreamedBody::forwarded(Box::new(Some(bytes)), MAX_ANSWER_BYTES as u64))
        }
        None => None,
    };
    let timeout = Duration::from_millis(u64::from(app.devices.config.max_timeout_ms));
    let out = Outgoing {
        method,
        url,
        headers,
        device_headers: Vec::new(),
        body,
        // A long command may take the longest time any device may have.
        timeout,
    };
    save(
        app,
        job,
        owner,
        json!({"sent": true}),
        Progress {
            done: 0,
            total: Some(1),
        },
    )
    .await?;
    let answer = tokio::select! {
        answer = app.devices.forward(&device, out) => answer,
        lost = keep_lease(app, job, owner) => return Err(lost),
    };
    let answer = answer.map_err(Step::Failed)?;
    tokio::select! {
        result = report(answer) => result,
        lost = keep_lease(app, job, owner) => Err(lost),
    }
}

/// Renews the job's lease while the device works; returns only once the
/// lease is lost (the job was canceled, or taken over).
async fn keep_lease(app: &App, job: &Job, owner: &str) -> Step {
    let every = app.config.job_lease / 3;
    loop {
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
        match app
            .store
            .heartbeat(&job.tenant_id, &job.id, owner, lease_until(app), now_millis())
            .await
        {
            Ok(_) => {}
            // The command goes on; the next beat may find the database again.
            Err(canon_store::StoreError::Unavailable(_)) => {}
            Err(e) => return Step::from(e),
        }
    }
}

/// The device's answer as the job's result: its status, headers and body
/// (JSON when it is JSON, text when it is UTF-8, else `body_base64`).
async fn report(answer: Response<canon_http::body::Body>) -> Result<Value, Step> {
    let (parts, body) = answer.into_parts();
    let mut bytes = Vec::new();
    if let canon_http::body::Body::Streamed(mut streamed) = body {
        while let Some(chunk) = streamed.chunks.next_chunk().await {
            let chunk = chunk.map_err(|e| failed(ProblemKind::BadGateway, e.to_string()))?;
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(failed(
                    ProblemKind::BadGateway,
                    format!("The device's answer is larger than the {MAX_ANSWER_BYTES} bytes a command keeps."),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(earlier)) => *earlier = format!("{earlier}, {value}"),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|e| e.trim().ends_with("json")));
    let mut result = json!({"status": parts.status.as_u16(), "headers": headers});
    match (is_json, String::from_utf8(bytes)) {
        (true, Ok(text)) => {
            result["body"] = serde_json::from_str(&text).unwrap_or(Value::String(text));
        }
        (false, Ok(text)) => result["body"] = Value::String(text),
        (_, Err(e)) => {
            result["body_base64"] = base64::engine::general_purpose::STANDARD.encode(e.into_bytes()).into();
        }
    }
    Ok(result)
}
