//! Where store and validation errors become problems: the one mapping from
//! internal failures to the catalogue.

use canon_http::{FieldError, Problem, ProblemKind};
use canon_store::{RejectedWrite, StoreError};

/// Maps a store failure to the problem answered for it. Internal details
/// are logged, never sent.
pub fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Conflict { pointer } => Problem::new(
            ProblemKind::UniqueConflict,
            format!("The value at {pointer} is already taken."),
        )
        .with_errors(vec![FieldError::new(pointer, "already taken")]),
        StoreError::HeldByDeletion { pointer } => Problem::new(
            ProblemKind::UniqueConflict,
            format!(
                "The value at {pointer} still belongs to a deleted tenant: it is free again once that tenant's \
                 deletion has finished and its job has expired (a day after it finished). If the deletion \
                 stopped, send DELETE for that tenant again to finish it."
            ),
        )
        .with_errors(vec![FieldError::new(pointer, "held by a tenant being deleted")]),
        StoreError::NotEmpty => Problem::new(
            ProblemKind::StateConflict,
            "The collection still has records. Delete them first, or send DELETE with ?force=true.",
        ),
        StoreError::ExpectationFailed => Problem::new(
            ProblemKind::PreconditionFailed,
            "The resource changed while this request was being handled; fetch it again.",
        ),
        StoreError::Gone => Problem::new(
            ProblemKind::Gone,
            "The resource was deleted while this request was handled.",
        ),
        StoreError::LastAdmin => Problem::new(
            ProblemKind::LastAdmin,
            "This change would leave the tenant without an admin. Make another user admin first.",
        ),
        StoreError::Rejected(rejected) => rejected_problem(rejected),
        StoreError::Locked(lease) => crate::render::lock_info(&lease).problem(),
        StoreError::Vanished => Problem::new(
            ProblemKind::NotFound,
            "The resource was deleted while this request was handled.",
        ),
        StoreError::JobFinished(status) => Problem::new(
            ProblemKind::StateConflict,
            format!("The job already {}; it can no longer be canceled.", status.as_str()),
        ),
        // Only workers hold job leases; a request never sees this.
        StoreError::LeaseLost => {
            tracing::error!("a job lease was lost while serving a request");
            internal()
        }
        StoreError::Unavailable(msg) => {
            tracing::error!(error = %msg, "database unavailable");
            Problem::new(
                ProblemKind::ServiceUnavailable,
                "The database is unavailable; retry shortly.",
            )
            .with("retry_after", 5)
        }
        StoreError::Internal(msg) => {
            tracing::error!(error = %msg, "storage failure");
            internal()
        }
    }
}

/// The problem for data a write's computation refused: a failed patch
/// `test` (409), an operation the current data cannot take (409), a result
/// that breaks the collection's schema (400).
pub fn rejected_problem(rejected: RejectedWrite) -> Problem {
    match rejected {
        RejectedWrite::TestFailed { operation, detail } => Problem::new(
            ProblemKind::PatchTestFailed,
            format!("The test at operation {operation} did not hold; nothing was changed."),
        )
        .with_errors(vec![FieldError::new(format!("/{operation}"), detail)]),
        RejectedWrite::Inapplicable { operation, detail } => Problem::new(
            ProblemKind::StateConflict,
            format!("Operation {operation} cannot be applied to the current record ({detail}); nothing was changed."),
        )
        .with_errors(vec![FieldError::new(format!("/{operation}"), detail)]),
        RejectedWrite::Invalid { detail, errors } => Problem::new(ProblemKind::SchemaViolation, detail).with_errors(
            errors
                .into_iter()
                .map(|(pointer, detail)| FieldError::new(pointer, detail))
                .collect(),
        ),
    }
}

/// The problem for anything unexpected.
pub fn internal() -> Problem {
    Problem::new(
        ProblemKind::Internal,
        "An unexpected error occurred. Quote the request_id when reporting it.",
    )
}
