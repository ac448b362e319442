//! Checking what clients send: query parameters, JSON bodies, names.
//! Every failure here is a 400 problem that says exactly what is wrong.

use bytes::Bytes;
use canon_http::media::MediaType;
use canon_http::{FieldError, Problem, ProblemKind};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Query parameters, decoded, in order.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Decodes the query of `uri`, rejecting parameters not `allowed` (a
    /// trailing `[` in an allowed name admits `name[…]`).
    pub fn parse(uri: &http::Uri, allowed: &[&str]) -> Result<Query, Problem> {
        let raw = uri.query().unwrap_or("");
        let mut out = Vec::new();
        for (k, v) in decode_query(raw)? {
            let known = allowed.iter().any(|a| match a.strip_suffix('[') {
                Some(prefix) => k.starts_with(prefix) && k[prefix.len()..].starts_with('[') && k.ends_with(']'),
                None => *a == k,
            });
            if !known {
                return Err(invalid_query(&k, "is not a parameter of this endpoint"));
            }
            out.push((k, v));
        }
        Ok(Query(out))
    }

    /// The single value of `name`; two values are an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, Problem> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(invalid_query(name, "is given more than once"));
        }
        Ok(first)
    }

    /// A boolean flag (`true`/`false`), default false.
    pub fn flag(&self, name: &str) -> Result<bool, Problem> {
        match self.one(name)? {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(invalid_query(name, "must be true or false")),
        }
    }
}

/// Splits and decodes an `application/x-www-form-urlencoded` query. Unlike
/// a lossy decoder, a name or value whose percent-encoding is broken (`%`
/// without two hex digits) or whose bytes are not UTF-8 is a 400: a filter
/// must never silently compare against U+FFFD or a guessed `%`.
fn decode_query(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(k).map_err(|e| {
            Problem::new(
                ProblemKind::InvalidQuery,
                format!("A query parameter name {}.", e.what()),
            )
        })?;
        let value = percent_decode(v).map_err(|e| invalid_query(&name, e.what()))?;
        out.push((name, value));
    }
    Ok(out)
}

/// Why a query component could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PercentError {
    /// A `%` not followed by two hex digits.
    BrokenEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl PercentError {
    fn what(self) -> &'static str {
        match self {
            PercentError::BrokenEscape => "has a `%` not followed by two hex digits (write `%25` for a literal `%`)",
            PercentError::NotUtf8 => "is not valid UTF-8 once percent-decoded",
        }
    }
}

/// Decodes `+` and `%XX`.
fn percent_decode(s: &str) -> Result<String, PercentError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PercentError::BrokenEscape)?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PercentError::NotUtf8)
}

/// A 400 naming a query parameter.
pub fn invalid_query(name: &str, what: &str) -> Problem {
    Problem::new(
        ProblemKind::InvalidQuery,
        format!("The query parameter `{name}` {what}."),
    )
    .with("parameter", name.to_owned())
}

/// A 400 naming a body field.
pub fn invalid_field(pointer: &str, what: &str) -> Problem {
    Problem::new(ProblemKind::InvalidField, format!("{pointer}: {what}"))
        .with_errors(vec![FieldError::new(pointer, what)])
}

/// A 400 naming every body field in `errors` (at least one) at once.
pub fn invalid_fields(errors: Vec<FieldError>) -> Problem {
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.pointer, e.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Problem::new(ProblemKind::InvalidField, detail).with_errors(errors)
}

/// Refuses a merge patch (RFC 7396) that removes a member (`null`): no
/// setting of users or collections can be removed, only given a value.
pub fn no_removals(body: &serde_json::Value) -> Result<(), Problem> {
    match body.as_object().into_iter().flatten().find(|(_, v)| v.is_null()) {
        Some((k, _)) => Err(invalid_field(&format!("/{k}"), "cannot be removed; send a value")),
        None => Ok(()),
    }
}

/// Parses a JSON body, mapping every failure to a 400 with a pointer.
pub fn json_body(body: Option<&(MediaType, Bytes)>) -> Result<Value, Problem> {
    let Some((_, bytes)) = body else {
        return Err(Problem::new(
            ProblemKind::MalformedBody,
            "This request needs a JSON body.",
        ));
    };
    crate::json::parse(bytes).map_err(|e| json_problem(&e))
}

/// The 400 for a body [`crate::json::parse`] refused, naming the offending
/// value by JSON pointer into the body as sent.
pub fn json_problem(e: &crate::json::JsonError) -> Problem {
    use crate::json::JsonError;
    let what = e.describe();
    match e {
        JsonError::Syntax { .. } => Problem::new(
            ProblemKind::MalformedBody,
            format!("The body is not well-formed JSON: {what}."),
        ),
        JsonError::Number { pointer, .. } => Problem::new(
            ProblemKind::InvalidField,
            format!("The body has a number Canon cannot keep at {}: {what}.", shown(pointer)),
        )
        .with_errors(vec![FieldError::new(pointer.clone(), what)]),
        JsonError::TooDeep { pointer } | JsonError::Duplicate { pointer } => Problem::new(
            ProblemKind::MalformedBody,
            format!("The body is refused at {}: {what}.", shown(pointer)),
        )
        .with_errors(vec![FieldError::new(pointer.clone(), what)]),
    }
}

fn shown(pointer: &str) -> String {
    if pointer.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{pointer}`")
    }
}

/// Decodes `value` into `T` (typically with `deny_unknown_fields`), naming
/// the offending field by pointer.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let pointer = pointer_of(e.path());
        let detail = e.inner().to_string();
        Problem::new(
            ProblemKind::MalformedBody,
            format!("The body does not have the expected shape: {detail}."),
        )
        .with_errors(vec![FieldError::new(pointer, detail)])
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1"))),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    out
}

/// Whether `s` is a slug: `[a-z][a-z0-9-]{0,62}`.
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks `name` (at `pointer`) is a slug.
pub fn slug(name: &str, pointer: &str) -> Result<(), Problem> {
    if is_slug(name) {
        Ok(())
    } else {
        Err(invalid_field(
            pointer,
            "must be a slug: a lower-case letter, then up to 62 lower-case letters, digits or hyphens",
        ))
    }
}

/// Record ids that would collide with a sub-route of `…/records`
/// (`…/records/batch` is the batch endpoint).
pub const RESERVED_RECORD_IDS: &[&str] = &["batch"];

/// Whether `s` may be a client-chosen id: 1 to 128 of `A-Z a-z 0-9 . _ ~ -`,
/// and a single addressable path segment (not `.` or `..`).
pub fn is_client_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// Checks a client-chosen record id given at `pointer` (a body field, or
/// `/id` for the id in the request path): a valid single path segment that
/// no sub-route claims.
pub fn record_id(id: &str, pointer: &str) -> Result<(), Problem> {
    if RESERVED_RECORD_IDS.contains(&id) {
        return Err(Problem::new(
            ProblemKind::InvalidField,
            format!("{id} is reserved: …/records/{id} is another endpoint, so no record may have this id."),
        )
        .with_errors(vec![FieldError::new(pointer, format!("{id} is reserved"))]));
    }
    if !is_client_id(id) {
        return Err(Problem::new(
            ProblemKind::InvalidField,
            "A record id chosen by the client must be 1 to 128 of A-Z a-z 0-9 . _ ~ - and not `.` or `..`.",
        )
        .with_errors(vec![FieldError::new(pointer, "not a valid record id")]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme", "a-1", &format!("a{}", "b".repeat(62))] {
            assert!(is_slug(ok), "{ok}");
        }
        for bad in ["", "A", "1a", "-a", "a_b", "a b", "é", &"a".repeat(64)] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_single_addressable_segments() {
        for ok in ["a", "a.b", "..a", "a..", "x~_-9", &"z".repeat(128)] {
            assert!(record_id(ok, "/id").is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "batch", "a/b", "a b", "é", "%2E", &"z".repeat(129)] {
            let p = record_id(bad, "/id").unwrap_err();
            assert_eq!(p.extension("errors").unwrap()[0]["pointer"], "/id", "{bad}");
        }
        assert!(
            record_id("batch", "/id")
                .unwrap_err()
                .detail()
                .contains("batch is reserved")
        );
    }

    #[test]
    fn query_decoding_refuses_invalid_utf8_and_broken_escapes() {
        let uri: http::Uri = "/x?filter%5Bn%5D=a+b%2Bc%C3%A9&limit=%25".parse().unwrap();
        let q = Query::parse(&uri, &["limit", "filter["]).unwrap();
        assert_eq!(
            q.0,
            vec![("filter[n]".into(), "a b+cé".into()), ("limit".into(), "%".into())]
        );
        for bad in [
            "/x?limit=%FF",
            "/x?%FF=1",
            "/x?limit=%C3",
            "/x?limit=%",
            "/x?limit=%G1",
            "/x?limit=%+1",
            "/x?%=1",
        ] {
            let uri: http::Uri = bad.parse().unwrap();
            assert!(Query::parse(&uri, &["limit"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_query_parameters_are_rejected() {
        let uri: http::Uri = "/x?limit=1&filter[name]=a".parse().unwrap();
        assert!(Query::parse(&uri, &["limit", "filter["]).is_ok());
        assert!(Query::parse(&uri, &["limit"]).is_err());
        let uri: http::Uri = "/x?filterx=1".parse().unwrap();
        assert!(Query::parse(&uri, &["filter["]).is_err());
    }

    #[test]
    fn decode_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            name: String,
        }
        let p = decode::<T>(serde_json::json!({"name": 5})).unwrap_err();
        assert_eq!(p.extension("errors").unwrap()[0]["pointer"], "/name");
    }
}
