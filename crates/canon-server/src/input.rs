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
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let known = allowed.iter().any(|a| match a.strip_suffix('[') {
                Some(prefix) => k.starts_with(prefix) && k[prefix.len()..].starts_with('[') && k.ends_with(']'),
                None => *a == k,
            });
            if !known {
                return Err(invalid_query(&k, "is not a parameter of this endpoint"));
            }
            out.push((k.into_owned(), v.into_owned()));
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

/// Parses a JSON body, mapping every failure to a 400 with a pointer.
pub fn json_body(body: Option<&(MediaType, Bytes)>) -> Result<Value, Problem> {
    let Some((_, bytes)) = body else {
        return Err(Problem::new(
            ProblemKind::MalformedBody,
            "This request needs a JSON body.",
        ));
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "the body ends before the JSON value does".to_owned(),
            _ => format!("invalid JSON at line {} column {}: {e}", e.line(), e.column()),
        };
        Problem::new(
            ProblemKind::MalformedBody,
            format!("The body is not well-formed JSON: {what}."),
        )
    })
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

/// Whether `s` may be a client-chosen id: 1 to 128 of `A-Z a-z 0-9 . _ ~ -`.
pub fn is_client_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
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
