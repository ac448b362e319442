//! The names of the metrics the store records through the `metrics` facade
//! (the server installs the recorder that exports them; without one,
//! recording costs nothing).

/// Store calls' seconds, by `op` (`read`, `write`: a write's time includes
/// its wait for the group commit), a histogram.
pub const STORE_SECONDS: &str = "canon_store_call_duration_seconds";
/// Writes committed together by one group commit, a histogram.
pub const COMMIT_BATCH: &str = "canon_store_commit_batch_size";
