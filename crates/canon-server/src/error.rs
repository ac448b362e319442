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
        StoreError::ExpectationRequired => Problem::new(
            ProblemKind::PreconditionRequired,
            "This collection requires conditional writes: name the record's current entity tag (`*` does not count).",
        ),
        StoreError::AtWrite { index, cause } => batch_write_problem(index, *cause),
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

/// The problem for an atomic batch whose operation `index` failed with
/// `cause`: the problem `cause` maps to (its type and status, its extension
/// members), its detail saying which operation failed, its field errors
/// moved under `/operations/{index}` (one error at `/operations/{index}`
/// when it had none), so a client finds the operation to fix.
fn batch_write_problem(index: usize, cause: StoreError) -> Problem {
    let at = format!("/operations/{index}");
    // The single-write details speak of races; in a batch these are plain
    // facts about the operation's target.
    let what = match &cause {
        StoreError::ExpectationFailed => Some(
            "Its precondition does not hold: `if_match` does not name the record's current entity tag, \
             or the id a create names is taken.",
        ),
        StoreError::Vanished => Some("No record has this id."),
        StoreError::Gone => Some("The record was deleted."),
        _ => None,
    };
    let single = store_problem(cause);
    let detail = what.unwrap_or_else(|| single.detail());
    let mut problem = Problem::new(
        single.kind(),
        format!("Operation {index} failed, so nothing of the atomic batch was applied. {detail}"),
    );
    let body = single.to_body("", "");
    let relocated: Vec<FieldError> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            FieldError::new(
                format!("{at}{}", e["pointer"].as_str().unwrap_or_default()),
                e["detail"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    problem = if relocated.is_empty() {
        problem.with_errors(vec![FieldError::new(&at, detail)])
    } else {
        problem.with_errors(relocated)
    };
    // Standard members are refused by `with`; `errors` is set above.
    for (name, value) in body.as_object().into_iter().flatten() {
        if name != "errors" {
            problem = problem.with(name, value.clone());
        }
    }
    problem
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
