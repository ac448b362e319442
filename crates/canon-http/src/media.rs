//! Media types Canon reads and writes, `Content-Type` parsing and `Accept`
//! negotiation (RFC 9110 §12.5.1).

use std::fmt;

/// A media type Canon can read or produce. Closed on purpose: a type not in
/// this list is neither accepted nor served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `application/json`
    Json,
    /// `application/merge-patch+json` (RFC 7396)
    MergePatch,
    /// `application/json-patch+json` (RFC 6902)
    JsonPatch,
    /// `application/x-ndjson`: one JSON value per line
    Ndjson,
    /// `text/csv`
    Csv,
    /// `application/problem+json` (RFC 9457)
    Problem,
    /// `text/html`
    Html,
    /// `text/javascript` (RFC 9239): the API reference's renderer
    JavaScript,
    /// `text/plain`: licence texts of vendored assets
    Text,
}

impl MediaType {
    /// Every type, for lookups.
    pub const ALL: [MediaType; 9] = [
        MediaType::Json,
        MediaType::MergePatch,
        MediaType::JsonPatch,
        MediaType::Ndjson,
        MediaType::Csv,
        MediaType::Problem,
        MediaType::Html,
        MediaType::JavaScript,
        MediaType::Text,
    ];

    /// `type/subtype`, lower case, without parameters.
    pub const fn essence(self) -> &'static str {
        match self {
            MediaType::Json => "application/json",
            MediaType::MergePatch => "application/merge-patch+json",
            MediaType::JsonPatch => "application/json-patch+json",
            MediaType::Ndjson => "application/x-ndjson",
            MediaType::Csv => "text/csv",
            MediaType::Problem => "application/problem+json",
            MediaType::Html => "text/html",
            MediaType::JavaScript => "text/javascript",
            MediaType::Text => "text/plain",
        }
    }

    /// The `Content-Type` value Canon sends for this type.
    pub const fn content_type(self) -> &'static str {
        match self {
            MediaType::Csv => "text/csv; charset=utf-8",
            MediaType::Html => "text/html; charset=utf-8",
            MediaType::JavaScript => "text/javascript; charset=utf-8",
            MediaType::Text => "text/plain; charset=utf-8",
            other => other.essence(),
        }
    }

    /// [`MediaType::content_type`] as a header value, made at compile time:
    /// `HeaderValue::from_static` checks every byte when it runs, and every
    /// answer with a body sends one.
    pub fn content_type_value(self) -> http::HeaderValue {
        macro_rules! made {
            ($media:expr) => {{
                const VALUE: http::HeaderValue = http::HeaderValue::from_static($media.content_type());
                VALUE
            }};
        }
        match self {
            MediaType::Json => made!(MediaType::Json),
            MediaType::MergePatch => made!(MediaType::MergePatch),
            MediaType::JsonPatch => made!(MediaType::JsonPatch),
            MediaType::Ndjson => made!(MediaType::Ndjson),
            MediaType::Csv => made!(MediaType::Csv),
            MediaType::Problem => made!(MediaType::Problem),
            MediaType::Html => made!(MediaType::Html),
            MediaType::JavaScript => made!(MediaType::JavaScript),
            MediaType::Text => made!(MediaType::Text),
        }
    }

    /// The type whose essence is `essence` (compared case-insensitively).
    pub fn from_essence(essence: &str) -> Option<MediaType> {
        Self::ALL
            .into_iter()
            .find(|m| m.essence().eq_ignore_ascii_case(essence))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.essence())
    }
}

/// Why a `Content-Type` header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    /// The header is not `type/subtype` with optional parameters.
    #[error("Content-Type is not a media type")]
    Malformed,
    /// A well-formed type Canon does not read.
    #[error("media type {0} is not supported")]
    Unsupported(String),
    /// A charset other than UTF-8 was declared.
    #[error("charset {0} is not supported; send UTF-8")]
    Charset(String),
}

/// Parses a `Content-Type` value into a [`MediaType`]. Only `charset=utf-8`
/// (any case) is allowed as a charset; other parameters are ignored.
pub fn parse_content_type(value: &str) -> Result<MediaType, ContentTypeError> {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !is_media_range_token(essence, false) {
        return Err(ContentTypeError::Malformed);
    }
    for param in parts {
        let Some((name, val)) = param.split_once('=') else {
            return Err(ContentTypeError::Malformed);
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let val = val.trim().trim_matches('"');
            if !val.eq_ignore_ascii_case("utf-8") {
                return Err(ContentTypeError::Charset(val.to_owned()));
            }
        }
    }
    MediaType::from_essence(essence).ok_or_else(|| ContentTypeError::Unsupported(essence.to_ascii_lowercase()))
}

/// `type/subtype` syntax check (RFC 9110 token characters); `*` allowed when
/// `wildcards` is set.
fn is_media_range_token(s: &str, wildcards: bool) -> bool {
    let Some((t, st)) = s.split_once('/') else {
        return false;
    };
    let token = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            && (wildcards || !x.contains('*'))
    };
    token(t) && token(st) && !(t == "*" && st != "*")
}

/// One parsed element of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
struct AcceptRange<'a> {
    ty: &'a str,
    subtype: &'a str,
    /// Quality in thousandths, 0..=1000.
    q: u16,
}

impl AcceptRange<'_> {
    /// How specifically this range matches `m`: 3 exact, 2 `type/*`, 1 `*/*`, 0 no match.
    fn specificity(&self, m: MediaType) -> u8 {
        let (ty, subtype) = m.essence().split_once('/').unwrap_or(("", ""));
        if self.ty == "*" {
            1
        } else if !self.ty.eq_ignore_ascii_case(ty) {
            0
        } else if self.subtype == "*" {
            2
        } else if self.subtype.eq_ignore_ascii_case(subtype) {
            3
        } else {
            0
        }
    }
}

fn parse_q(v: &str) -> Option<u16> {
    // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

fn parse_accept(header: &str) -> Vec<AcceptRange<'_>> {
    header
        .split(',')
        .filter_map(|element| {
            let mut parts = element.split(';');
            let range = parts.next()?.trim();
            if !is_media_range_token(range, true) {
                return None;
            }
            let (ty, subtype) = range.split_once('/')?;
            let mut q = 1000;
            for p in parts {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = parse_q(v)?;
                }
            }
            Some(AcceptRange { ty, subtype, q })
        })
        .collect()
}

/// Picks what to produce from `offered` (in the server's order of preference)
/// given the request's `Accept` header values. `None` means nothing offered is
/// acceptable: answer 406.
///
/// Unparseable elements of `Accept` are ignored; an absent or empty header
/// accepts anything. Each offered type takes the quality of the most specific
/// range that matches it; the highest non-zero quality wins and ties go to the
/// server's order.
pub fn negotiate<'h>(accept: impl IntoIterator<Item = &'h str>, offered: &[MediaType]) -> Option<MediaType> {
    let mut ranges = Vec::new();
    let mut any_header = false;
    for value in accept {
        if !value.trim().is_empty() {
            any_header = true;
        }
        ranges.extend(parse_accept(value));
    }
    if !any_header {
        return offered.first().copied();
    }
    let mut best: Option<(u16, MediaType)> = None;
    for &m in offered {
        let matched = ranges
            .iter()
            .filter(|r| r.specificity(m) > 0)
            .max_by_key(|r| r.specificity(m));
        if let Some(r) = matched
            && r.q > 0
            && best.is_none_or(|(q, _)| r.q > q)
        {
            best = Some((r.q, m));
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaType::*;

    const LIST: &[MediaType] = &[Json, Csv, Ndjson];

    #[test]
    fn no_accept_gives_server_preference() {
        assert_eq!(negotiate([], LIST), Some(Json));
        assert_eq!(negotiate([""], LIST), Some(Json));
    }

    #[test]
    fn exact_and_wildcards() {
        assert_eq!(negotiate(["text/csv"], LIST), Some(Csv));
        assert_eq!(negotiate(["text/*"], LIST), Some(Csv));
        assert_eq!(negotiate(["*/*"], LIST), Some(Json));
        assert_eq!(negotiate(["application/x-ndjson, */*;q=0.1"], LIST), Some(Ndjson));
        assert_eq!(negotiate(["TEXT/CSV"], LIST), Some(Csv));
    }

    #[test]
    fn quality_orders_and_zero_excludes() {
        assert_eq!(negotiate(["application/json;q=0.5, text/csv;q=0.9"], LIST), Some(Csv));
        assert_eq!(negotiate(["*/*, application/json;q=0"], &[Json]), None);
        assert_eq!(negotiate(["*/*;q=0.1, application/json;q=0"], LIST), Some(Csv));
    }

    #[test]
    fn nothing_acceptable() {
        assert_eq!(negotiate(["application/xml"], LIST), None);
        assert_eq!(negotiate(["garbage"], LIST), None);
        assert_eq!(negotiate(["text/csv;q=2"], LIST), None, "invalid q drops the element");
    }

    #[test]
    fn several_header_lines_combine() {
        assert_eq!(negotiate(["application/xml", "text/csv"], LIST), Some(Csv));
    }

    #[test]
    fn content_type_values_are_the_content_types() {
        for media in MediaType::ALL {
            assert_eq!(media.content_type_value().to_str().ok(), Some(media.content_type()));
        }
    }

    #[test]
    fn content_type_parsing() {
        assert_eq!(parse_content_type("application/json"), Ok(Json));
        assert_eq!(parse_content_type("Application/JSON; charset=UTF-8"), Ok(Json));
        assert_eq!(parse_content_type("application/merge-patch+json"), Ok(MergePatch));
        assert!(matches!(
            parse_content_type("application/xml"),
            Err(ContentTypeError::Unsupported(_))
        ));
        assert!(matches!(
            parse_content_type("application/json; charset=latin1"),
            Err(ContentTypeError::Charset(_))
        ));
        assert_eq!(parse_content_type("json"), Err(ContentTypeError::Malformed));
        assert_eq!(parse_content_type("*/*"), Err(ContentTypeError::Malformed));
    }
}
