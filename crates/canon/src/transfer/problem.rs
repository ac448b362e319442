//! RFC 9457 problem details as this client reads them: leniently (every
//! member optional, unknown members kept), because a problem is shown to a
//! person, not matched on.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// A problem body (`application/problem+json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProblemBody {
    /// The problem type's URL (Canon's are `/problems/{slug}`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The type's short title.
    #[serde(default)]
    pub title: Option<String>,
    /// The HTTP status it came with.
    #[serde(default)]
    pub status: Option<u16>,
    /// What happened this time.
    #[serde(default)]
    pub detail: Option<String>,
    /// The request's id, for the server's logs.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Field errors: where (a JSON pointer) and what.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub errors: Vec<FieldError>,
    /// Every other member (`required_role`, `max_bytes`, `lock`, …).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

/// One entry of a problem's `errors`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FieldError {
    /// The JSON pointer of the value at fault.
    #[serde(default)]
    pub pointer: Option<String>,
    /// What is wrong with it.
    #[serde(default)]
    pub detail: Option<String>,
}

/// `null` read as no errors: a job's report writes `"errors": null` for a
/// problem without field errors.
fn null_as_empty<'de, D>(deserializer: D) -> Result<Vec<FieldError>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<FieldError>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Extension members [`ProblemBody::describe`] leaves out: `instance`
/// only repeats the URL the person just asked for.
const HIDDEN: &[&str] = &["instance"];

impl ProblemBody {
    /// A problem for an answer that carried none (an empty or non-problem
    /// body): the status and whatever text came.
    pub fn from_status(status: reqwest::StatusCode, text: &str) -> Self {
        let text = text.trim();
        ProblemBody {
            title: status.canonical_reason().map(str::to_owned),
            status: Some(status.as_u16()),
            detail: (!text.is_empty()).then(|| text.chars().take(500).collect()),
            ..ProblemBody::default()
        }
    }

    /// The problem's slug: the last segment of its type URL.
    pub fn slug(&self) -> Option<&str> {
        self.kind.as_deref().and_then(|t| t.rsplit('/').next())
    }

    /// The most precise one-line account: the field errors when there are
    /// any (they say where), otherwise the detail, otherwise the title.
    pub fn one_line(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|e| match (&e.pointer, &e.detail) {
                (Some(p), Some(d)) if !p.is_empty() => format!("{p}: {d}"),
                (_, Some(d)) => d.clone(),
                (Some(p), None) => p.clone(),
                (None, None) => String::new(),
            })
            .filter(|e| !e.is_empty())
            .collect();
        if !errors.is_empty() {
            return errors.join("; ");
        }
        self.detail
            .clone()
            .or_else(|| self.title.clone())
            .unwrap_or_else(|| "no detail given".to_owned())
    }

    /// Every line a person needs, each starting with `indent`: status and
    /// title, detail, field errors, extensions, type and request id.
    pub fn describe(&self, indent: &str) -> String {
        let mut out = String::new();
        let heading = match (self.status, &self.title) {
            (Some(s), Some(t)) => format!("{s} {t}"),
            (Some(s), None) => s.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "problem".to_owned(),
        };
        out.push_str(&format!("{indent}{heading}\n"));
        if let Some(detail) = &self.detail {
            out.push_str(&format!("{indent}{detail}\n"));
        }
        for e in &self.errors {
            let pointer = e.pointer.as_deref().filter(|p| !p.is_empty()).unwrap_or("(body)");
            out.push_str(&format!("{indent}  {pointer}: {}\n", e.detail.as_deref().unwrap_or("")));
        }
        for (name, value) in self.extensions.iter().filter(|(k, _)| !HIDDEN.contains(&k.as_str())) {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{indent}{name}: {value}\n"));
        }
        match (&self.kind, &self.request_id) {
            (Some(kind), Some(id)) if !id.is_empty() => out.push_str(&format!("{indent}type {kind}, request {id}\n")),
            (Some(kind), _) => out.push_str(&format!("{indent}type {kind}\n")),
            (None, Some(id)) if !id.is_empty() => out.push_str(&format!("{indent}request {id}\n")),
            _ => {}
        }
        out
    }
}

impl fmt::Display for ProblemBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status, self.slug()) {
            (Some(status), Some(slug)) => write!(f, "{status} {slug}: {}", self.one_line()),
            (Some(status), None) => write!(f, "{status}: {}", self.one_line()),
            _ => f.write_str(&self.one_line()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_problem_says_where_and_what() {
        let p: ProblemBody = serde_json::from_value(serde_json::json!({
            "type": "/problems/schema-violation", "title": "Record does not match the collection schema",
            "status": 400, "detail": "The record fails the schema in 1 place(s).", "instance": "/v1/x",
            "request_id": "r1", "errors": [{"pointer": "/data/port", "detail": "\"x\" is not of type \"integer\""}]
        }))
        .unwrap();
        assert_eq!(
            p.to_string(),
            "400 schema-violation: /data/port: \"x\" is not of type \"integer\""
        );
        let text = p.describe("  ");
        assert!(
            text.starts_with("  400 Record does not match the collection schema\n"),
            "{text}"
        );
        assert!(
            text.contains("  The record fails the schema in 1 place(s).\n"),
            "{text}"
        );
        assert!(
            text.contains("    /data/port: \"x\" is not of type \"integer\"\n"),
            "{text}"
        );
        assert!(
            text.contains("  type /problems/schema-violation, request r1\n"),
            "{text}"
        );
        assert!(!text.contains("instance"), "{text}");
    }

    #[test]
    fn null_errors_are_no_errors() {
        let p: ProblemBody = serde_json::from_value(serde_json::json!({
            "type": "/problems/malformed-body", "title": "Malformed", "status": 400,
            "detail": "expected value at line 1 column 1", "errors": null
        }))
        .unwrap();
        assert_eq!(p.to_string(), "400 malformed-body: expected value at line 1 column 1");
    }

    #[test]
    fn an_answer_without_a_problem_still_reads() {
        let p = ProblemBody::from_status(reqwest::StatusCode::BAD_GATEWAY, "upstream down\n");
        assert_eq!(p.to_string(), "502: upstream down");
        assert_eq!(p.describe(""), "502 Bad Gateway\nupstream down\n");
    }
}
