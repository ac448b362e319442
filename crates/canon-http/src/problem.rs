//! RFC 9457 problem details.
//!
//! A [`Problem`] is built from a [`ProblemKind`], so its `type`, `title` and
//! `status` always come from the catalogue; callers add only the `detail` and
//! extension members.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalogue::ProblemKind;

/// One entry of a problem's `errors` member: a JSON pointer into the request
/// and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the offending value, e.g. `/data/port`.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldError {
    /// A field error at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// A problem to be answered: the kind (which fixes the status), a detail for
/// this occurrence, and extension members.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    kind: ProblemKind,
    detail: String,
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of `kind` with the given human-readable detail.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// The problem's kind.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The detail member.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Adds the `errors` member.
    pub fn with_errors(self, errors: Vec<FieldError>) -> Self {
        let errors = serde_json::to_value(errors).unwrap_or(Value::Null);
        self.with("errors", errors)
    }

    /// Adds an extension member. Standard members cannot be overridden.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !matches!(name, "type" | "title" | "status" | "detail" | "instance" | "request_id") {
            self.extensions.insert(name.to_owned(), value.into());
        }
        self
    }

    /// An extension member, if set.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    /// The JSON body for this problem as answered to the request at `instance`.
    pub fn to_body(&self, instance: &str, request_id: &str) -> Value {
        let entry = self.kind.entry();
        let mut body = Map::with_capacity(6 + self.extensions.len());
        body.insert("type".into(), entry.type_url().into());
        body.insert("title".into(), entry.title.into());
        body.insert("status".into(), entry.status.into());
        body.insert("detail".into(), self.detail.clone().into());
        body.insert("instance".into(), instance.into());
        body.insert("request_id".into(), request_id.into());
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.entry().slug,
            self.kind.entry().status,
            self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_all_standard_members_and_extensions() {
        let p = Problem::new(ProblemKind::UniqueConflict, "email taken")
            .with_errors(vec![FieldError::new("/email", "already in use")]);
        let body = p.to_body("/v1/tenants/acme/users", "req-1");
        assert_eq!(body["type"], "/problems/unique-conflict");
        assert_eq!(body["status"], 409);
        assert_eq!(body["title"], "Conflict with an existing resource");
        assert_eq!(body["detail"], "email taken");
        assert_eq!(body["instance"], "/v1/tenants/acme/users");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["errors"][0]["pointer"], "/email");
    }

    #[test]
    fn extensions_cannot_override_standard_members() {
        let p = Problem::new(ProblemKind::NotFound, "x")
            .with("status", 200)
            .with("type", "evil");
        let body = p.to_body("/", "r");
        assert_eq!(body["status"], 404);
        assert_eq!(body["type"], "/problems/not-found");
    }
}
