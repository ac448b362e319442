//! `/healthz`, `/readyz` and `/metrics`.

use canon_http::flow::{BoxFuture, Existence, Found, Input, Representation, Resource, Success};
use canon_http::media::MediaType;
use canon_http::{Problem, ProblemKind};
use serde_json::json;

use super::Cx;
use crate::input::Query;

/// `GET /healthz`: the process is alive.
pub struct Health;

impl Resource for Health {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Found(Found::default())) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async { Ok(Success::Ok(Representation::json(&json!({"status": "ok"})))) })
    }
}

/// `GET /readyz`: the database answers, and the process was not told to
/// stop (a draining process still serves, but takes no new traffic).
pub struct Ready(pub Cx);

impl Resource for Ready {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Found(Found::default())) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async move {
            if self.0.app.draining() {
                return Err(
                    Problem::new(ProblemKind::ServiceUnavailable, "The server is shutting down.")
                        .with("retry_after", 5),
                );
            }
            match self.0.app.store.ping().await {
                Ok(()) => Ok(Success::Ok(Representation::json(&json!({"status": "ready"})))),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    Err(
                        Problem::new(ProblemKind::ServiceUnavailable, "The database does not answer.")
                            .with("retry_after", 5),
                    )
                }
            }
        })
    }
}

/// `GET /metrics`: the process's metrics in Prometheus's text format
/// (`crate::metrics`).
pub struct Metrics;

impl Resource for Metrics {
    fn parse(&mut self, input: Input<'_>) -> Result<(), Problem> {
        Query::parse(&input.head.uri, &[]).map(|_| ())
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Existence, Problem>> {
        Box::pin(async { Ok(Existence::Found(Found::default())) })
    }
    fn execute(&mut self, _: Option<MediaType>) -> BoxFuture<'_, Result<Success, Problem>> {
        Box::pin(async {
            // Rendering walks every series: off the async workers.
            let text = tokio::task::spawn_blocking(crate::metrics::render)
                .await
                .map_err(|_| crate::error::internal())?;
            Ok(Success::Ok(Representation::new(MediaType::Text, text.into())))
        })
    }
}
