//! RFC 9457 problem details.
//!
//! A [`Problem`] is built from a [`ProblemKind`], so its `type`, `title` and
//! `status` always come from the catalogue; callers add only the `detail` and
//! extension members.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalogue::ProblemKind;

/// Most field errors a problem lists; the rest are counted in `errors_omitted`.
pub const MAX_FIELD_ERRORS: usize = 50;
/// Longest text (a field error's pointer or detail, a string extension
/// member) a problem echoes, in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest `detail`, in characters.
pub const MAX_DETAIL_CHARS: usize = 400;

/// Collects formatted text up to a limit and then stops the formatter, so
/// a message that would echo a huge value costs no more than the limit.
struct Bounded {
    out: String,
    room: usize,
    cut: bool,
}

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if self.room == 0 {
                self.cut = true;
                return Err(std::fmt::Error);
            }
            self.out.push(c);
            self.room -= 1;
        }
        Ok(())
    }
}

/// `text` formatted, cut to `max` characters (with `…` when cut).
fn bounded(text: impl std::fmt::Display, max: usize) -> String {
    use std::fmt::Write as _;
    let mut w = Bounded {
        out: String::new(),
        room: max,
        cut: false,
    };
    let _ = write!(w, "{text}");
    if w.cut {
        w.out.push('…');
    }
    w.out
}

/// Phrases libraries use that name Canon's internals, and what they mean
/// to a client. Checked in order, before the word rules of [`public_text`].
const PHRASES: &[(&str, &str)] = &[
    (
        "is not present in a registry and retrieving it failed:",
        "cannot be resolved",
    ),
    ("$serde_json::private::Number", "number"),
    ("$serde_json::private::RawValue", "raw JSON value"),
    (
        "data did not match any variant of untagged enum",
        "the value has none of the allowed forms:",
    ),
    (
        "feature or a custom resolver is required to resolve external schemas via HTTP",
        "(external schemas cannot be fetched: use only references within the schema)",
    ),
    (
        "feature or a custom resolver is required to resolve external schemas via files",
        "(external schemas cannot be read: use only references within the schema)",
    ),
    ("expected a map", "expected an object"),
    ("expected a sequence", "expected an array"),
    ("expected a borrowed string", "expected a string"),
    ("expected unit", "expected null"),
    ("invalid type: map", "invalid type: object"),
    ("invalid type: sequence", "invalid type: array"),
    ("invalid type: unit value", "invalid type: null"),
];

/// Crate features and type names that mean nothing to a client.
const DROPPED_WORDS: &[&str] = &[
    "arbitrary_precision",
    "preserve_order",
    "float_roundtrip",
    "raw_value",
    "unbounded_depth",
    "`resolve-http`",
    "`resolve-file`",
    "`resolve-async`",
];

/// Rewrites a library's message in the API's terms: Rust types (`u64`,
/// `struct NewUser`, `enum Role`, paths with `::`), crate features and source
/// paths (`src/x.rs:12`) are replaced or dropped. Quoted words (values the
/// client sent) are left alone.
pub fn public_text(text: &str) -> String {
    let mut s = text.to_owned();
    for (from, to) in PHRASES {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut words = s.split(' ').peekable();
    while let Some(word) = words.next() {
        let core = word.trim_end_matches([',', '.', ';', ':', ')']);
        let tail = &word[core.len()..];
        let core = core.trim_start_matches('(');
        let quoted = core.starts_with(['"', '\'', '`']) && !DROPPED_WORDS.contains(&core);
        let replacement: Option<String> = if quoted {
            None
        } else if DROPPED_WORDS.contains(&core) {
            Some(String::new())
        } else if matches!(core, "u8" | "u16" | "u32" | "u64" | "u128" | "usize") {
            Some(format!("a non-negative whole number{tail}"))
        } else if matches!(core, "i8" | "i16" | "i32" | "i64" | "i128" | "isize") {
            Some(format!("a whole number{tail}"))
        } else if matches!(core, "f32" | "f64") {
            Some(format!("a number{tail}"))
        } else if matches!(core, "struct" | "enum") && words.peek().is_some() {
            // `struct NewUser` → `an object`; `enum Role` → `one of the allowed values`.
            let name = words.next().unwrap_or_default();
            let name_tail = &name[name.trim_end_matches([',', '.', ';', ':', ')']).len()..];
            Some(if core == "struct" {
                format!("an object{name_tail}")
            } else {
                format!("one of the allowed values{name_tail}")
            })
        } else if core.contains("::") {
            Some(format!("{}{tail}", core.rsplit("::").next().unwrap_or_default()))
        } else if core.ends_with(".rs") || core.contains(".rs:") {
            Some(String::new())
        } else {
            None
        };
        match replacement {
            Some(r) if r.is_empty() => {}
            Some(r) => out.push(r),
            None => out.push(word.to_owned()),
        }
    }
    out.join(" ")
}

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

    /// A field error at `pointer` whose detail is `detail` formatted, but
    /// never more than [`MAX_TEXT_CHARS`] of it: use this for library
    /// messages that may echo a large part of the request.
    pub fn describe(pointer: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            pointer: pointer.into(),
            detail: bounded(detail, MAX_TEXT_CHARS),
        }
    }

    /// This error within the bounds a problem keeps.
    fn bounded(self) -> Self {
        Self {
            pointer: bounded(&self.pointer, MAX_TEXT_CHARS),
            detail: bounded(public_text(&bounded(&self.detail, MAX_TEXT_CHARS)), MAX_TEXT_CHARS),
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
    /// A problem of `kind` with the given human-readable detail (cut to
    /// [`MAX_DETAIL_CHARS`] and put in the API's terms by [`public_text`]).
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        let detail = bounded(detail.into(), MAX_DETAIL_CHARS);
        Self {
            kind,
            detail: bounded(public_text(&detail), MAX_DETAIL_CHARS),
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

    /// Adds the `errors` member: the first [`MAX_FIELD_ERRORS`] of
    /// `errors`, each bounded, and `errors_omitted` when there were more.
    pub fn with_errors(mut self, mut errors: Vec<FieldError>) -> Self {
        let omitted = errors.len().saturating_sub(MAX_FIELD_ERRORS);
        errors.truncate(MAX_FIELD_ERRORS);
        let errors: Vec<FieldError> = errors.into_iter().map(FieldError::bounded).collect();
        let errors = serde_json::to_value(errors).unwrap_or(Value::Null);
        self.extensions.insert("errors".into(), errors);
        if omitted > 0 {
            self.extensions.insert("errors_omitted".into(), omitted.into());
        } else {
            self.extensions.remove("errors_omitted");
        }
        self
    }

    /// Adds an extension member. Standard members cannot be overridden.
    /// Strings in it are cut to [`MAX_TEXT_CHARS`]; an `errors` array
    /// is bounded like [`Problem::with_errors`].
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        if matches!(name, "type" | "title" | "status" | "detail" | "instance" | "request_id") {
            return self;
        }
        let mut value = value.into();
        if name == "errors"
            && let Value::Array(items) = &mut value
            && items.len() > MAX_FIELD_ERRORS
        {
            let omitted = items.len() - MAX_FIELD_ERRORS;
            items.truncate(MAX_FIELD_ERRORS);
            self.extensions.insert("errors_omitted".into(), omitted.into());
        }
        bound_strings(&mut value, 0);
        self.extensions.insert(name.to_owned(), value);
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

/// Cuts every string in `value` to [`MAX_TEXT_CHARS`] (nesting is
/// followed a few levels; deeper values are dropped).
fn bound_strings(value: &mut Value, depth: usize) {
    match value {
        Value::String(s) if s.chars().nth(MAX_TEXT_CHARS).is_some() => *s = bounded(&*s, MAX_TEXT_CHARS),
        Value::Array(items) => items.iter_mut().for_each(|v| bound_strings(v, depth + 1)),
        Value::Object(map) => map.values_mut().for_each(|v| bound_strings(v, depth + 1)),
        _ => {}
    }
    if depth > 8 && (value.is_array() || value.is_object()) {
        *value = Value::Null;
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
    fn field_errors_are_capped_and_texts_cut() {
        let errors = (0..1000)
            .map(|i| FieldError::new(format!("/x/{i}"), "y".repeat(10_000)))
            .collect();
        let p = Problem::new(ProblemKind::SchemaViolation, "z".repeat(100_000)).with_errors(errors);
        let body = p.to_body("/", "r");
        assert_eq!(body["errors"].as_array().unwrap().len(), MAX_FIELD_ERRORS);
        assert_eq!(body["errors_omitted"], 950);
        assert!(body["errors"][0]["detail"].as_str().unwrap().chars().count() <= MAX_TEXT_CHARS + 1);
        assert!(body["detail"].as_str().unwrap().chars().count() <= MAX_DETAIL_CHARS + 1);
        assert!(serde_json::to_vec(&body).unwrap().len() < 20_000);
        let p = Problem::new(ProblemKind::SchemaViolation, "x").with("value", "v".repeat(5000));
        assert!(p.extension("value").unwrap().as_str().unwrap().len() < 1000);
        assert_eq!(
            FieldError::describe("/a", "b".repeat(1_000_000)).detail.chars().count(),
            201
        );
    }

    #[test]
    fn library_terms_become_api_terms() {
        for (from, to) in [
            (
                "invalid type: string \"x\", expected u64",
                "invalid type: string \"x\", expected a non-negative whole number",
            ),
            (
                "invalid type: integer `5`, expected struct NewTenant",
                "invalid type: integer `5`, expected an object",
            ),
            ("expected enum Role.", "expected one of the allowed values."),
            (
                "invalid type: map, expected a sequence",
                "invalid type: object, expected an array",
            ),
            ("number out of range (arbitrary_precision)", "number out of range"),
            ("needs arbitrary_precision", "needs"),
            ("failed in canon_server::input::decode", "failed in decode"),
            ("at src/input.rs:12 here", "at here"),
            ("a \"u64\" string", "a \"u64\" string"),
            (
                "Resource 'https://x.example/s.json' is not present in a registry and retrieving it failed: \
                 `resolve-http` feature or a custom resolver is required to resolve external schemas via HTTP",
                "Resource 'https://x.example/s.json' cannot be resolved \
                 (external schemas cannot be fetched: use only references within the schema)",
            ),
            (
                "`resolve-http` feature or a custom resolver is required to resolve external schemas via HTTP",
                "(external schemas cannot be fetched: use only references within the schema)",
            ),
        ] {
            assert_eq!(public_text(from), to);
        }
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
