//! Daily quota counts shared through the store (docs/decisions.md, "Daily
//! quotas across restarts and nodes").
//!
//! The limiter counts each request in process, so the quota costs no store
//! call per request. Every [`SAVE_EVERY`] this module adds what it counted
//! since the last save to the store (`QuotaStore::add_quota_usage`, one
//! write) and takes every tenant's total back as the base of its count: a
//! restart starts from the day's total, and nodes on one database see each
//! other's counts within one interval. On shutdown the last counts are
//! saved; `kill -9` loses at most one interval's counts.

use std::sync::Arc;
use std::time::Duration;

use canon_store::StoreError;

use crate::limits::epoch_nanos;
use crate::state::App;

/// How often counts go to the store and totals come back.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// The UTC day (since the epoch) of the app's clock.
fn today(app: &App) -> u32 {
    let day = epoch_nanos(app.clock.now()) / 1_000_000_000 / 86_400;
    u32::try_from(day).unwrap_or(u32::MAX)
}

/// Adds what the limiter counted since the last save to the store and takes
/// today's totals back. On failure the counts stay unsaved for the next try.
pub async fn save(app: &App) -> Result<(), StoreError> {
    let Some(ledger) = app.limiter.ledger() else {
        return Ok(());
    };
    let day = today(app);
    let unsaved = ledger.unsaved();
    match app.store.add_quota_usage(unsaved.clone(), day).await {
        Ok(totals) => {
            ledger.saved(day, &totals);
            Ok(())
        }
        Err(e) => {
            ledger.unsave(&unsaved);
            Err(e)
        }
    }
}

/// Saves every [`SAVE_EVERY`] for as long as the process runs.
pub fn watch(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: bootstrap has just loaded.
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = save(&app).await {
                tracing::warn!(error = %e, "could not save the daily quota counts; retrying");
            }
        }
    })
}
