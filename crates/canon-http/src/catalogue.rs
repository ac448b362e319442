//! The one table of statuses and problem types.
//!
//! Every status Canon answers and every problem type it can put in an
//! `application/problem+json` body is listed here, once. Problem bodies, the
//! `/docs/status-codes` page and the `/problems/{slug}` pages are all generated
//! from these two tables, so the documentation cannot drift from behaviour.

use http::StatusCode;

/// What Canon promises about one HTTP status: when it is sent and which
/// headers come with it.
#[derive(Debug, Clone, Copy)]
pub struct StatusEntry {
    /// The status code.
    pub code: u16,
    /// The standard reason phrase.
    pub reason: &'static str,
    /// When Canon answers with it, in Canon's own words.
    pub when: &'static str,
    /// Response headers this status always carries (beyond `X-Request-Id`).
    pub headers: &'static [&'static str],
}

/// Every status in the contract, in numeric order.
#[rustfmt::skip]
pub const STATUSES: &[StatusEntry] = &[
    StatusEntry { code: 200, reason: "OK", when: "A read succeeded, or a replace or patch succeeded and the body is the new representation.", headers: &["ETag", "Last-Modified", "Content-Location (PUT/PATCH)"] },
    StatusEntry { code: 201, reason: "Created", when: "A resource was created; it is stored durably before the answer is sent.", headers: &["Location", "ETag", "Last-Modified"] },
    StatusEntry { code: 202, reason: "Accepted", when: "Long work was queued as a job; poll the job to follow it.", headers: &["Location", "Retry-After"] },
    StatusEntry { code: 204, reason: "No Content", when: "A delete, a lock release or an OPTIONS request succeeded; there is no body.", headers: &["Allow (OPTIONS)"] },
    StatusEntry { code: 207, reason: "Multi-Status", when: "A batch ran; each operation has its own status in the body.", headers: &[] },
    StatusEntry { code: 301, reason: "Moved Permanently", when: "A GET or HEAD addressed a renamed collection by its old name.", headers: &["Location"] },
    StatusEntry { code: 303, reason: "See Other", when: "A job finished successfully; its result is at the other URL.", headers: &["Location"] },
    StatusEntry { code: 304, reason: "Not Modified", when: "A conditional GET or HEAD found the client's copy still current.", headers: &["ETag", "Cache-Control", "Vary"] },
    StatusEntry { code: 307, reason: "Temporary Redirect", when: "A path under /v1/tenants/current was sent to the caller's own tenant.", headers: &["Location", "Vary: Authorization"] },
    StatusEntry { code: 308, reason: "Permanent Redirect", when: "A method other than GET or HEAD addressed a renamed collection by its old name.", headers: &["Location"] },
    StatusEntry { code: 400, reason: "Bad Request", when: "The request is malformed: bad JSON, a bad query parameter or header, or a body that fails the collection's schema.", headers: &[] },
    StatusEntry { code: 401, reason: "Unauthorized", when: "No bearer token was sent, or the token is unknown or revoked.", headers: &["WWW-Authenticate"] },
    StatusEntry { code: 403, reason: "Forbidden", when: "The caller may see the resource, but its role does not allow this action.", headers: &[] },
    StatusEntry { code: 404, reason: "Not Found", when: "No such route or resource, or a resource of another tenant (existence is never revealed).", headers: &[] },
    StatusEntry { code: 405, reason: "Method Not Allowed", when: "The route exists but does not support this method.", headers: &["Allow"] },
    StatusEntry { code: 406, reason: "Not Acceptable", when: "None of the media types in Accept can be produced.", headers: &[] },
    StatusEntry { code: 408, reason: "Request Timeout", when: "The client stopped sending the body before it was complete.", headers: &["Connection: close"] },
    StatusEntry { code: 409, reason: "Conflict", when: "A unique value or client-chosen id is taken, the resource's state forbids the change (a JSON Patch test failed, a collection still has records, the tenant would lose its last admin), or a request with the same Idempotency-Key is still running.", headers: &[] },
    StatusEntry { code: 410, reason: "Gone", when: "The resource was deleted; its tombstone is kept for the retention period.", headers: &[] },
    StatusEntry { code: 412, reason: "Precondition Failed", when: "An If-Match, If-None-Match or If-Unmodified-Since precondition failed.", headers: &["ETag"] },
    StatusEntry { code: 413, reason: "Content Too Large", when: "The request body is larger than the configured limit.", headers: &["Connection: close"] },
    StatusEntry { code: 414, reason: "URI Too Long", when: "The request target is longer than 8 KiB.", headers: &[] },
    StatusEntry { code: 415, reason: "Unsupported Media Type", when: "The body's Content-Type is not one this method accepts.", headers: &["Accept-Post or Accept-Patch"] },
    StatusEntry { code: 422, reason: "Unprocessable Content", when: "An Idempotency-Key was reused with a different request body.", headers: &[] },
    StatusEntry { code: 423, reason: "Locked", when: "Another caller holds a lock on the record.", headers: &[] },
    StatusEntry { code: 428, reason: "Precondition Required", when: "The collection requires If-Match on writes and none was sent.", headers: &[] },
    StatusEntry { code: 429, reason: "Too Many Requests", when: "An API key's rate, a tenant's daily quota (reset at 00:00 UTC), a client address's failed authentications, or a caller's share of the requests in flight is exhausted. Wait Retry-After seconds; nothing was done or counted.", headers: &["Retry-After", "RateLimit", "RateLimit-Policy"] },
    StatusEntry { code: 431, reason: "Request Header Fields Too Large", when: "The request's header section is larger than the limit.", headers: &[] },
    StatusEntry { code: 500, reason: "Internal Server Error", when: "Something unexpected failed; the body carries the request id, never internals.", headers: &[] },
    StatusEntry { code: 501, reason: "Not Implemented", when: "The method is unknown to Canon, or the operation is not implemented yet.", headers: &[] },
    StatusEntry { code: 502, reason: "Bad Gateway", when: "A device endpoint refused, reset or answered garbage.", headers: &[] },
    StatusEntry { code: 503, reason: "Service Unavailable", when: "Maintenance mode, overload or an unreachable database; or a device whose circuit is open or that has its fill of requests in flight.", headers: &["Retry-After"] },
    StatusEntry { code: 504, reason: "Gateway Timeout", when: "A device endpoint did not answer within its timeout.", headers: &[] },
];

macro_rules! problem_kinds {
    ($( $(#[$doc:meta])* $variant:ident => ($slug:literal, $status:literal, $title:literal, $desc:literal), )+) => {
        /// Every kind of problem Canon reports. The discriminant picks a row of
        /// [`PROBLEMS`]; the row fixes the status, so a handler can never send a
        /// problem with a status that disagrees with its type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemKind {
            $( $(#[$doc])* $variant, )+
        }

        /// The problem-type table, one row per [`ProblemKind`], in declaration order.
        pub const PROBLEMS: &[ProblemType] = &[
            $( ProblemType { kind: ProblemKind::$variant, slug: $slug, status: $status, title: $title, description: $desc }, )+
        ];
    };
}

problem_kinds! {
    /// The request body is not well-formed JSON (or not valid UTF-8).
    MalformedBody => ("malformed-body", 400, "Malformed request body",
        "The body could not be parsed: it is not well-formed JSON, not valid UTF-8, nested too deeply, or not the shape this endpoint takes (wrong types, unknown or missing fields). Fix the body and send the request again."),
    /// A query parameter is unknown or has a bad value.
    InvalidQuery => ("invalid-query", 400, "Invalid query parameter",
        "A query parameter is unknown or its value is not valid: a bad limit, cursor, filter or sort. The detail names the parameter."),
    /// A request header has a value Canon cannot use.
    InvalidHeader => ("invalid-header", 400, "Invalid header",
        "A request header has a value that cannot be used. The detail names the header."),
    /// A field has a value outside what the endpoint allows (a bad slug, role or schema).
    InvalidPath => ("invalid-path", 400, "Invalid path",
        "The path cannot be relayed as it is: a device path with an encoded `/` or `\\` (`%2F`, `%5C`) could escape the device endpoint's path once decoded. Send the segments unencoded."),
    InvalidField => ("invalid-field", 400, "Invalid field",
        "A field of the body is well-formed but its value is not allowed here, for example a name that is not a slug or a schema that is not a valid JSON Schema. `errors` lists each field by JSON pointer."),
    /// The record failed the collection's JSON Schema.
    SchemaViolation => ("schema-violation", 400, "Record does not match the collection schema",
        "The record's data fails the collection's JSON Schema. `errors` lists every failing location as a JSON pointer into the request, with what is wrong there."),
    /// No credentials were sent.
    CredentialsRequired => ("credentials-required", 401, "Authentication required",
        "The request carried no bearer token. Send `Authorization: Bearer <token>`."),
    /// The credentials sent are unknown, revoked or expired.
    InvalidToken => ("invalid-token", 401, "Invalid token",
        "The bearer token is unknown, revoked or expired. Obtain a new API key from a tenant admin."),
    /// The caller's role does not allow the action.
    Forbidden => ("forbidden", 403, "Forbidden",
        "You can see this resource but your role does not allow this action. The detail names the role required."),
    /// No such route or resource.
    NotFound => ("not-found", 404, "Not found",
        "Nothing exists at this URL, or it belongs to a tenant you cannot see. Canon never reveals whether another tenant's resource exists."),
    /// The route does not support the method.
    MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed",
        "This URL exists but does not support the method. The `Allow` header lists the methods it does support."),
    /// Nothing acceptable can be produced.
    NotAcceptable => ("not-acceptable", 406, "Not acceptable",
        "None of the media types in `Accept` can be produced here. `acceptable` lists what can be."),
    /// The body did not arrive in time.
    RequestTimeout => ("request-timeout", 408, "Request timeout",
        "The client stopped sending the request body before it was complete. The connection is closed; send the request again."),
    /// A unique value or id is taken.
    UniqueConflict => ("unique-conflict", 409, "Conflict with an existing resource",
        "A value that must be unique is already taken (a tenant name, a user email, a collection name, a unique record field or a client-chosen id). `errors` names the field by JSON pointer."),
    /// The resource's state forbids the change.
    StateConflict => ("state-conflict", 409, "Conflict with the resource's state",
        "The change is not possible in the resource's current state, for example deleting a collection that still has records without `?force=true`."),
    /// An earlier request with the same idempotency key is still running.
    IdempotencyKeyInFlight => ("idempotency-key-in-flight", 409, "Idempotency key in use",
        "A request with this `Idempotency-Key` is still being processed. Retry shortly: once it finishes, the retry receives its response."),
    /// A JSON Patch `test` operation failed.
    PatchTestFailed => ("patch-test-failed", 409, "Patch test failed",
        "A `test` operation of the JSON Patch did not hold against the current record, so no operation was applied. `errors` points at the failing operation."),
    /// The change would leave a tenant without an admin.
    LastAdmin => ("last-admin", 409, "A tenant keeps at least one admin",
        "The change would leave the tenant without an admin: it demotes or deletes the tenant's last admin (yourself included). Make another user admin first, then retry. Checked inside the write, so two admins demoting each other at once cannot both succeed."),
    /// The resource was deleted.
    Gone => ("gone", 410, "Gone",
        "The resource existed and was deleted. Its tombstone is kept for the retention period (30 days by default); after that the URL answers 404."),
    /// A precondition header failed.
    PreconditionFailed => ("precondition-failed", 412, "Precondition failed",
        "A conditional header (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) did not hold. Fetch the resource again, re-apply your change and resend with the new `ETag`."),
    /// The body is too large.
    ContentTooLarge => ("content-too-large", 413, "Content too large",
        "The request body is larger than this endpoint accepts. `max_bytes` gives the limit."),
    /// The URI is too long.
    UriTooLong => ("uri-too-long", 414, "URI too long",
        "The request target is longer than the 8 KiB Canon accepts."),
    /// The body's media type is not accepted.
    UnsupportedMediaType => ("unsupported-media-type", 415, "Unsupported media type",
        "The body's `Content-Type` is not one this method accepts. `Accept-Post` or `Accept-Patch` lists the types that are."),
    /// An idempotency key was reused with another body.
    IdempotencyKeyReused => ("idempotency-key-reused", 422, "Idempotency key reused",
        "The `Idempotency-Key` was already used for a request with a different body. Use a new key for a new request."),
    /// Another caller holds the record's lock.
    Locked => ("locked", 423, "Locked",
        "Another caller holds a lock on this resource. The body says who and until when; retry after the lock expires or is released."),
    /// The collection requires If-Match.
    PreconditionRequired => ("precondition-required", 428, "Precondition required",
        "This collection requires conditional writes. Fetch the record, then resend the write with `If-Match` set to its `ETag`."),
    /// The API key's request rate (its burst) is exhausted.
    RateLimited => ("rate-limited", 429, "Rate limit exceeded",
        "This API key sent requests faster than its rate allows and its burst is used up (the `\"burst\"` policy of `RateLimit-Policy`: `q` requests, refilled over `w` seconds). Nothing was done and nothing was counted. Wait the seconds in `Retry-After` (the time until the next request is allowed), then send it again; `RateLimit` says how many are left."),
    /// The tenant's daily quota is used up.
    QuotaExhausted => ("quota-exhausted", 429, "Daily quota exhausted",
        "The tenant has used every request of its daily quota (the `\"daily\"` policy of `RateLimit-Policy`). The quota starts again at 00:00 UTC; `Retry-After` gives the seconds until then. An operator can raise the tenant's quota (`PATCH /v1/tenants/{tenant}`)."),
    /// Too many failed authentications from one client address.
    AuthFailuresLimited => ("auth-failures-limited", 429, "Too many failed authentications",
        "Too many requests from this client address carried a bearer token Canon does not know, so tokens sent from it are not checked for a while. Wait the seconds in `Retry-After`. A token that already worked from this address is still accepted."),
    /// The caller holds its whole share of the requests in flight.
    TooManyInFlight => ("too-many-in-flight", 429, "Too many requests in flight",
        "This API key (or its tenant) already has as many requests in flight as one caller may hold, so that one caller cannot take every slot of the server. Wait for a response before sending more; `Retry-After` says when to retry."),
    /// The request headers are too large.
    HeadersTooLarge => ("headers-too-large", 431, "Request header fields too large",
        "The request's header section (or one header in it) is larger than Canon accepts."),
    /// Something unexpected failed.
    Internal => ("internal", 500, "Internal server error",
        "Something unexpected failed while handling the request. Nothing about it is shown here; quote the `request_id` when you report it."),
    /// The method or operation is not implemented.
    NotImplemented => ("not-implemented", 501, "Not implemented",
        "The method is not one Canon implements, or this operation is not implemented yet."),
    /// A device endpoint misbehaved.
    BadGateway => ("bad-gateway", 502, "Bad gateway",
        "The device endpoint refused the connection, reset it or answered something that is not HTTP."),
    /// The service cannot take the request now.
    ServiceUnavailable => ("service-unavailable", 503, "Service unavailable",
        "Canon cannot take the request right now: maintenance, overload or an unreachable database. Retry after `Retry-After` seconds."),
    /// A device endpoint timed out.
    GatewayTimeout => ("gateway-timeout", 504, "Gateway timeout",
        "The device endpoint did not answer within its `timeout_ms`."),
    DeviceCircuitOpen => ("device-circuit-open", 503, "Device circuit open",
        "The device failed too many times in a row (502 or 504 each time), so Canon stops sending it requests for a while instead of making every caller wait for it. Retry after `Retry-After` seconds: then one request goes through as a probe, and a success closes the circuit. `GET …/devices/{device}` shows its `health`."),
    DeviceBusy => ("device-busy", 503, "Device busy",
        "The device already has as many requests in flight through Canon as it may (`CANON_DEVICE_MAX_CONCURRENCY`). Retry after `Retry-After` seconds."),
}

/// One row of the problem-type table.
#[derive(Debug, Clone, Copy)]
pub struct ProblemType {
    /// The kind this row describes.
    pub kind: ProblemKind,
    /// The last segment of the type URL, `/problems/{slug}`.
    pub slug: &'static str,
    /// The HTTP status sent with this problem.
    pub status: u16,
    /// A short, fixed summary (RFC 9457 `title`).
    pub title: &'static str,
    /// What it means and what the client should do.
    pub description: &'static str,
}

impl ProblemType {
    /// The `type` member of a problem body: a URL Canon serves.
    pub fn type_url(&self) -> String {
        format!("/problems/{}", self.slug)
    }
}

impl ProblemKind {
    /// This kind's row of [`PROBLEMS`].
    pub fn entry(self) -> &'static ProblemType {
        // The macro emits PROBLEMS in declaration order, so the discriminant is the index.
        &PROBLEMS[self as usize]
    }

    /// The status this kind is always sent with.
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.entry().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Looks a problem type up by its slug.
    pub fn from_slug(slug: &str) -> Option<ProblemKind> {
        PROBLEMS.iter().find(|p| p.slug == slug).map(|p| p.kind)
    }
}

/// Looks a status up in [`STATUSES`].
pub fn status_entry(code: u16) -> Option<&'static StatusEntry> {
    STATUSES.iter().find(|s| s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_table_is_indexed_by_kind() {
        for (i, p) in PROBLEMS.iter().enumerate() {
            assert_eq!(p.kind as usize, i, "{} out of order", p.slug);
            assert_eq!(p.kind.entry().slug, p.slug);
        }
    }

    #[test]
    fn every_problem_status_is_a_documented_error_status() {
        for p in PROBLEMS {
            let entry = status_entry(p.status).unwrap_or_else(|| panic!("{} has undocumented status", p.slug));
            assert!(entry.code >= 400, "{} is not an error status", p.slug);
            assert_eq!(p.kind.status().as_u16(), p.status);
        }
    }

    #[test]
    fn slugs_are_unique_and_url_safe() {
        let mut seen = std::collections::HashSet::new();
        for p in PROBLEMS {
            assert!(seen.insert(p.slug), "duplicate slug {}", p.slug);
            assert!(p.slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert_eq!(ProblemKind::from_slug(p.slug), Some(p.kind));
        }
    }

    #[test]
    fn every_error_status_has_a_problem_type() {
        for s in STATUSES.iter().filter(|s| s.code >= 400) {
            assert!(
                PROBLEMS.iter().any(|p| p.status == s.code),
                "{} has no problem type",
                s.code
            );
        }
    }
}
