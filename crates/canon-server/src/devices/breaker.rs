//! Per-device protection: a circuit breaker and a concurrency limit, kept
//! in this process (docs/devices.md, "When a device keeps failing").
//!
//! The breaker counts failures in a row: a 502 (refused, reset, garbage, TLS)
//! or a 504 (no response headers in time). At the threshold it opens:
//! requests are refused with 503 at once, without touching the device,
//! until the open period is over. Then one request passes as a probe
//! (half-open; the others still 503): its success closes the circuit, its
//! failure opens it again. Any answer of the device is a success, a 500 of
//! its own included: the device is reachable and speaks HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A device's circuit as `GET …/devices/{device}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Requests pass.
    Closed,
    /// Requests are refused until the open period ends.
    Open,
    /// The open period ended: the next request is a probe.
    HalfOpen,
}

impl Circuit {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// A device's health: its circuit and its failures in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The circuit.
    pub circuit: Circuit,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// Seconds until a probe may pass, while open.
    pub retry_after: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// One device's breaker state and concurrency slots.
#[derive(Debug)]
struct Slot {
    state: Mutex<State>,
    slots: Arc<Semaphore>,
}

/// Why a request may not go to the device now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The circuit is open (or a probe is out): retry after so many seconds.
    Open {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The device has its fill of requests in flight.
    Busy,
}

/// Every device's breaker and slots, by device id (a device deleted and
/// registered again starts afresh).
#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    open_for: Duration,
    max_concurrency: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A request let through to a device: it holds one of the device's slots
/// until dropped (after the response body, so a slow body keeps its slot),
/// and reports how the device did ([`Pass::succeeded`], [`Pass::failed`]). Dropped without a report (the caller went away), a
/// probe frees the way for the next one.
#[derive(Debug)]
pub struct Pass {
    slot: Arc<Slot>,
    probe: bool,
    reported: bool,
    open_for: Duration,
    threshold: u32,
    _permit: OwnedSemaphorePermit,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn seconds_until(until: Instant, now: Instant) -> u64 {
    until.saturating_duration_since(now).as_secs_f64().ceil().max(1.0) as u64
}

impl Breakers {
    /// Opening after `threshold` failures in a row (at least 1) for
    /// `open_for`; `max_concurrency` requests per device at once.
    pub fn new(threshold: u32, open_for: Duration, max_concurrency: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            max_concurrency: max_concurrency.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, device_id: &str) -> Arc<Slot> {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots
            .entry(device_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(State::default()),
                    slots: Arc::new(Semaphore::new(self.max_concurrency)),
                })
            })
            .clone()
    }

    /// Lets one request through to `device_id` at `now`, or says why not.
    pub fn admit(&self, device_id: &str, now: Instant) -> Result<Pass, Refused> {
        let slot = self.slot(device_id);
        let probe = {
            let mut state = lock(&slot.state);
            match state.open_until {
                Some(until) if now < until => {
                    return Err(Refused::Open {
                        retry_after: seconds_until(until, now),
                    });
                }
                // Half-open: one probe at a time.
                Some(_) if state.probing => return Err(Refused::Open { retry_after: 1 }),
                Some(_) => {
                    state.probing = true;
                    true
                }
                None => false,
            }
        };
        let permit = match slot.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if probe {
                    lock(&slot.state).probing = false;
                }
                return Err(Refused::Busy);
            }
        };
        Ok(Pass {
            slot,
            probe,
            reported: false,
            open_for: self.open_for,
            threshold: self.threshold,
            _permit: permit,
        })
    }

    /// Drops what is kept for `device_id` (it was deleted), so the map
    /// holds only devices that exist. Requests still in flight keep their
    /// slot until they end.
    pub fn forget(&self, device_id: &str) {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.remove(device_id);
    }

    /// The health of `device_id` at `now`.
    pub fn health(&self, device_id: &str, now: Instant) -> Health {
        let slot = self.slot(device_id);
        let state = lock(&slot.state);
        let circuit = match state.open_until {
            None => Circuit::Closed,
            Some(until) if now < until => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
        };
        Health {
            circuit,
            consecutive_failures: state.failures,
            retry_after: state.open_until.filter(|u| now < *u).map(|u| seconds_until(u, now)),
        }
    }
}

impl Pass {
    /// The device answered: the circuit closes, the count starts again.
    pub fn succeeded(&mut self) {
        self.reported = true;
        let mut state = lock(&self.slot.state);
        *state = State::default();
    }

    /// The device failed (502 or 504) at `now`: one more in a row; at the
    /// threshold, or when this was the probe, the circuit opens.
    pub fn failed(&mut self, now: Instant) {
        self.reported = true;
        let mut state = lock(&self.slot.state);
        state.failures = state.failures.saturating_add(1);
        state.probing = false;
        if self.probe || state.failures >= self.threshold {
            state.open_until = Some(now + self.open_for);
        }
    }

    /// Whether this request is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            lock(&self.slot.state).probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_open_the_circuit_and_a_probe_closes_it() {
        let b = Breakers::new(3, Duration::from_secs(10), 8);
        let t0 = Instant::now();
        for _ in 0..2 {
            b.admit("d", t0).unwrap().failed(t0);
        }
        // A success between failures starts the count again.
        b.admit("d", t0).unwrap().succeeded();
        assert_eq!(b.health("d", t0).consecutive_failures, 0);
        for _ in 0..3 {
            b.admit("d", t0).unwrap().failed(t0);
        }
        assert_eq!(b.health("d", t0).circuit, Circuit::Open);
        assert_eq!(b.admit("d", t0).unwrap_err(), Refused::Open { retry_after: 10 });
        let later = t0 + Duration::from_millis(4500);
        assert_eq!(b.admit("d", later).unwrap_err(), Refused::Open { retry_after: 6 });
        // Open period over: one probe, the others still refused.
        let after = t0 + Duration::from_secs(10);
        assert_eq!(b.health("d", after).circuit, Circuit::HalfOpen);
        let mut probe = b.admit("d", after).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.admit("d", after).unwrap_err(), Refused::Open { retry_after: 1 });
        // A failed probe opens it again at once.
        probe.failed(after);
        assert_eq!(b.health("d", after).circuit, Circuit::Open);
        let again = after + Duration::from_secs(10);
        b.admit("d", again).unwrap().succeeded();
        assert_eq!(b.health("d", again).circuit, Circuit::Closed);
        assert!(!b.admit("d", again).unwrap().is_probe());
        // Other devices never noticed.
        assert_eq!(b.health("other", t0).circuit, Circuit::Closed);
        // A deleted device is forgotten.
        b.admit("d", again).unwrap().failed(again);
        b.forget("d");
        assert_eq!(b.health("d", again).consecutive_failures, 0);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_through() {
        let b = Breakers::new(1, Duration::from_secs(1), 8);
        let t0 = Instant::now();
        b.admit("d", t0).unwrap().failed(t0);
        let after = t0 + Duration::from_secs(1);
        drop(b.admit("d", after).unwrap());
        assert!(b.admit("d", after).unwrap().is_probe());
    }

    #[test]
    fn a_device_has_at_most_its_slots_in_flight() {
        let b = Breakers::new(5, Duration::from_secs(1), 2);
        let now = Instant::now();
        let one = b.admit("d", now).unwrap();
        let _two = b.admit("d", now).unwrap();
        assert_eq!(b.admit("d", now).unwrap_err(), Refused::Busy);
        assert!(b.admit("e", now).is_ok(), "per device");
        drop(one);
        assert!(b.admit("d", now).is_ok());
    }
}
