//! Maintenance mode: which requests it refuses, and how every process on
//! one store learns of a change (docs/decisions.md, "Maintenance mode").
//!
//! The setting lives in the store (`MaintenanceStore`), so it survives a
//! restart and reaches every node. Each process keeps a copy in `App`,
//! read on every request without touching the store: the process that
//! changes it updates its copy at once, the others within
//! [`REFRESH_EVERY`] by polling.

use std::sync::Arc;
use std::time::Duration;

use canon_http::flow::Availability;
use canon_store::Maintenance;

use crate::state::App;

/// How often a process reads the setting again: a change made through
/// another node takes effect here within this.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// What a refused request's problem says when the operator gave no words.
const STANDARD_MESSAGE: &str = "Canon is down for maintenance; retry later.";

/// Whether maintenance mode refuses a request for `path`: every `/v1`
/// path but the operator's `/v1/admin/…` (which the route table keeps for
/// the operator). Probes, documentation and problem pages stay up.
pub fn applies_to(path: &str) -> bool {
    (path.starts_with("/v1/") && !path.starts_with("/v1/admin/")) || path == "/v1"
}

/// The flow's availability fact for a request to `path` under `m`.
pub fn availability(m: &Maintenance, path: &str) -> Availability {
    if m.enabled && applies_to(path) {
        let reason = if m.message.is_empty() {
            STANDARD_MESSAGE.to_owned()
        } else {
            m.message.clone()
        };
        Availability::Unavailable {
            retry_after: u64::from(m.retry_after_seconds),
            reason,
        }
    } else {
        Availability::Available
    }
}

/// Reads the setting from the store every [`REFRESH_EVERY`], for as long
/// as the process runs; a failed read keeps the last known setting.
pub fn watch(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match app.store.maintenance().await {
                Ok(m) => app.remember_maintenance(m),
                Err(e) => tracing::warn!(error = %e, "could not read the maintenance mode"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(message: &str) -> Maintenance {
        Maintenance {
            enabled: true,
            retry_after_seconds: 120,
            message: message.into(),
            version: 2,
            updated_at: 0,
        }
    }

    #[test]
    fn maintenance_refuses_the_api_but_the_operators_admin_calls() {
        for path in ["/v1", "/v1/tenants", "/v1/tenants/acme/collections/c/records/r1"] {
            assert_eq!(
                availability(&on("Upgrading"), path),
                Availability::Unavailable {
                    retry_after: 120,
                    reason: "Upgrading".into()
                },
                "{path}"
            );
        }
        for path in [
            "/v1/admin/maintenance",
            "/healthz",
            "/readyz",
            "/docs/status-codes",
            "/openapi.json",
            "/v1x",
        ] {
            assert_eq!(availability(&on("x"), path), Availability::Available, "{path}");
        }
        let Availability::Unavailable { reason, .. } = availability(&on(""), "/v1/tenants") else {
            panic!("refused");
        };
        assert_eq!(reason, STANDARD_MESSAGE);
        let off = Maintenance {
            enabled: false,
            ..on("x")
        };
        assert_eq!(availability(&off, "/v1/tenants"), Availability::Available);
    }
}
