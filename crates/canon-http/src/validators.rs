//! Entity tags, modification dates and the evaluation of conditional
//! requests (RFC 9110 §8.8 and §13).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, header};

/// An entity tag: an opaque string, strong or weak.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    weak: bool,
    opaque: String,
}

impl EntityTag {
    /// A strong tag. `opaque` must not contain `"`; such characters are dropped.
    pub fn strong(opaque: impl Into<String>) -> Self {
        Self {
            weak: false,
            opaque: sanitize(opaque.into()),
        }
    }

    /// A weak tag (`W/"…"`).
    pub fn weak(opaque: impl Into<String>) -> Self {
        Self {
            weak: true,
            opaque: sanitize(opaque.into()),
        }
    }

    /// Whether the tag is weak.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// Strong comparison: both strong and the same opaque string.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the same opaque string, either may be weak.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }
}

fn sanitize(s: String) -> String {
    // Every byte looked at, without an early exit: the check vectorizes,
    // and nearly every tag passes it (store tags are hex).
    if s.bytes().fold(true, |ok, b| ok & is_etagc(b)) {
        s
    } else {
        s.bytes().filter(|&b| is_etagc(b)).map(char::from).collect()
    }
}

/// `etagc = %x21 / %x23-7E / obs-text` (obs-text not produced by Canon).
/// Appended to an entity tag's opaque part for a representation sent with a
/// content coding: a strong tag names one sequence of bytes (RFC 9110
/// §8.8.3), so the gzip-coded bytes need a tag of their own.
pub const GZIP_TAG_SUFFIX: &str = "-gzip";

/// The tag of the unencoded representation: tags the client received with a
/// coded representation compare as the representation they were coded from,
/// so `If-Match` and `If-None-Match` work whichever coding the client read.
fn strip_coding(opaque: &str) -> &str {
    opaque.strip_suffix(GZIP_TAG_SUFFIX).unwrap_or(opaque)
}

impl EntityTag {
    /// Parses one entity tag as written in an `ETag` field.
    pub fn parse(s: &str) -> Option<EntityTag> {
        let mut tags = Vec::with_capacity(1);
        parse_tag_list(s, &mut tags)?;
        match <[EntityTag; 1]>::try_from(tags) {
            Ok([tag]) => Some(tag),
            Err(_) => None,
        }
    }

    /// The tag of this representation's gzip-coded form.
    pub fn gzip(&self) -> EntityTag {
        EntityTag {
            weak: self.weak,
            opaque: format!("{}{GZIP_TAG_SUFFIX}", self.opaque),
        }
    }
}

fn is_etagc(b: u8) -> bool {
    (b == 0x21) | (0x23..=0x7e).contains(&b)
}

impl EntityTag {
    /// The tag as a header value (`"…"` or `W/"…"`), built without the
    /// formatting machinery: every response with a validator sends one.
    pub fn header_value(&self) -> Option<http::HeaderValue> {
        let mut field = String::with_capacity(self.opaque.len() + 4);
        if self.weak {
            field.push_str("W/");
        }
        field.push('"');
        field.push_str(&self.opaque);
        field.push('"');
        http::HeaderValue::try_from(field).ok()
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            write!(f, "W/\"{}\"", self.opaque)
        } else {
            write!(f, "\"{}\"", self.opaque)
        }
    }
}

/// The value of an `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    /// `*`: any current representation.
    Any,
    /// A list of tags.
    Tags(Vec<EntityTag>),
}

/// A header value that is not a valid entity-tag list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not `*` or a list of entity tags")]
pub struct BadTagList(pub &'static str);

impl TagCondition {
    /// Parses every line of `name` in `headers`; `Ok(None)` when absent.
    pub fn from_headers(headers: &HeaderMap, name: &'static header::HeaderName) -> Result<Option<Self>, BadTagList> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in headers.get_all(name) {
            let s = value.to_str().map_err(|_| BadTagList(name.as_str()))?;
            // A line holding only empty list elements (`,`, ` , `) counts as
            // absent: RFC 9110 §5.6.1 has recipients ignore empty elements.
            // (A header value's only whitespace is spaces and tabs.)
            if s.bytes().all(|b| matches!(b, b',' | b' ' | b'\t')) {
                continue;
            }
            present = true;
            if s.trim() == "*" {
                any = true;
                continue;
            }
            parse_tag_list(s, &mut tags).ok_or(BadTagList(name.as_str()))?;
        }
        match (present, any, tags.is_empty()) {
            (false, _, _) => Ok(None),
            (true, true, true) => Ok(Some(TagCondition::Any)),
            (true, false, false) => Ok(Some(TagCondition::Tags(tags))),
            // `*` mixed with tags, or an empty list, is not valid syntax.
            _ => Err(BadTagList(name.as_str())),
        }
    }

    fn matches(&self, current: Option<&EntityTag>, exists: bool, strong: bool) -> bool {
        match self {
            TagCondition::Any => exists,
            TagCondition::Tags(tags) => current.is_some_and(|cur| {
                tags.iter()
                    .any(|t| if strong { t.strong_eq(cur) } else { t.weak_eq(cur) })
            }),
        }
    }
}

fn parse_tag_list(s: &str, out: &mut Vec<EntityTag>) -> Option<()> {
    let mut rest = s.trim();
    loop {
        // Empty list elements (`"a",,"b"`, a leading or trailing comma) are
        // skipped, as RFC 9110 §5.6.1 requires of recipients.
        while let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        rest = rest.strip_prefix('"')?;
        let end = rest.find('"')?;
        let opaque = &rest[..end];
        if !opaque.bytes().fold(true, |ok, b| ok & (is_etagc(b) | (b >= 0x80))) {
            return None;
        }
        out.push(EntityTag {
            weak,
            opaque: strip_coding(opaque).to_owned(),
        });
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(())
}

/// A representation's validators, as known by the resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The entity tag, strong for records, weak for lists.
    pub etag: Option<EntityTag>,
    /// The last modification time.
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// Validators with both a tag and a date.
    pub fn new(etag: EntityTag, last_modified: SystemTime) -> Self {
        Self {
            etag: Some(etag),
            last_modified: Some(last_modified),
        }
    }
}

/// Formats a time as an HTTP-date (IMF-fixdate).
pub use crate::date::http_date;

/// Truncates a time to whole seconds, the precision of HTTP-dates.
pub fn to_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The conditional headers of a request, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: Option<TagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<TagCondition>,
    /// `If-Modified-Since`, when it is a valid HTTP-date (otherwise ignored, RFC 9110 §13.1.3).
    pub if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`, when it is a valid HTTP-date (otherwise ignored, RFC 9110 §13.1.4).
    pub if_unmodified_since: Option<SystemTime>,
}

impl Conditions {
    /// Reads the four conditional headers. Malformed tag lists are an error;
    /// malformed dates are ignored, as RFC 9110 requires, and so is an
    /// `If-Modified-Since` later than `now` (RFC 9110 §13.1.3: such a date
    /// says nothing about the client's copy, and honouring it would answer
    /// 304 for every change made before that future moment).
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Result<Self, BadTagList> {
        let date = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        Ok(Self {
            if_match: TagCondition::from_headers(headers, &header::IF_MATCH)?,
            if_none_match: TagCondition::from_headers(headers, &header::IF_NONE_MATCH)?,
            if_modified_since: date(header::IF_MODIFIED_SINCE).filter(|t| *t <= now),
            if_unmodified_since: date(header::IF_UNMODIFIED_SINCE),
        })
    }

    /// Whether `If-Match` names at least one entity tag. `If-Match: *` does
    /// not count: it holds for any current state, so it cannot stand in for
    /// a collection's demand that writers prove which version they read.
    pub fn if_match_names_a_tag(&self) -> bool {
        matches!(self.if_match, Some(TagCondition::Tags(_)))
    }

    /// Whether the request carries any precondition.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }
}

/// What a precondition evaluation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreconditionOutcome {
    /// Every condition held (or none was sent): go on.
    Proceed,
    /// 304: the client's copy is current (GET/HEAD only).
    NotModified,
    /// 412: a condition failed.
    Failed,
}

/// Evaluates `conditions` against the current representation in the order of
/// RFC 9110 §13.2.2. `current` is `None` when the resource does not exist.
pub fn evaluate(method: &Method, conditions: &Conditions, current: Option<&Validators>) -> PreconditionOutcome {
    let exists = current.is_some();
    let etag = current.and_then(|v| v.etag.as_ref());
    let modified = current.and_then(|v| v.last_modified).map(to_seconds);
    let safe = method == Method::GET || method == Method::HEAD;

    // Step 1 / 2: If-Match, else If-Unmodified-Since.
    if let Some(cond) = &conditions.if_match {
        if !cond.matches(etag, exists, true) {
            return PreconditionOutcome::Failed;
        }
    } else if let (Some(since), Some(modified)) = (conditions.if_unmodified_since, modified)
        && modified > since
    {
        return PreconditionOutcome::Failed;
    }

    // Step 3 / 4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if let Some(cond) = &conditions.if_none_match {
        if cond.matches(etag, exists, false) {
            return if safe {
                PreconditionOutcome::NotModified
            } else {
                PreconditionOutcome::Failed
            };
        }
    } else if safe
        && let (Some(since), Some(modified)) = (conditions.if_modified_since, modified)
        && modified <= since
    {
        return PreconditionOutcome::NotModified;
    }
    PreconditionOutcome::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn cond(pairs: &[(&'static str, &str)]) -> Conditions {
        Conditions::from_headers(&headers(pairs), SystemTime::now()).unwrap()
    }

    fn current() -> Validators {
        Validators::new(EntityTag::strong("v1"), UNIX_EPOCH + Duration::from_secs(1_000_000))
    }

    #[test]
    fn tag_display_and_parse_round_trip() {
        assert_eq!(EntityTag::strong("abc").to_string(), "\"abc\"");
        assert_eq!(EntityTag::weak("abc").to_string(), "W/\"abc\"");
        let c = cond(&[("if-match", "\"a\", W/\"b\" ,\"c,d\"")]);
        assert_eq!(
            c.if_match,
            Some(TagCondition::Tags(vec![
                EntityTag::strong("a"),
                EntityTag::weak("b"),
                EntityTag::strong("c,d")
            ]))
        );
        assert_eq!(cond(&[("if-none-match", "*")]).if_none_match, Some(TagCondition::Any));
    }

    #[test]
    fn malformed_tag_lists_are_errors() {
        for bad in ["abc", "\"abc", "\"a\" \"b\"", "*, \"a\"", "W/abc"] {
            assert!(
                Conditions::from_headers(&headers(&[("if-match", bad)]), SystemTime::now()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_list_elements_are_ignored() {
        let c = cond(&[("if-match", ",\"a\",, ,W/\"b\",")]);
        assert_eq!(
            c.if_match,
            Some(TagCondition::Tags(vec![EntityTag::strong("a"), EntityTag::weak("b")]))
        );
        // A field of empty elements only is no condition at all.
        assert_eq!(cond(&[("if-none-match", " , ")]).if_none_match, None);
        assert_eq!(cond(&[("if-none-match", "")]).if_none_match, None);
    }

    #[test]
    fn a_future_if_modified_since_is_ignored() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let h = headers(&[("if-modified-since", &http_date(now + Duration::from_secs(3600)))]);
        assert_eq!(Conditions::from_headers(&h, now).unwrap().if_modified_since, None);
        let h = headers(&[("if-modified-since", &http_date(now - Duration::from_secs(3600)))]);
        assert!(Conditions::from_headers(&h, now).unwrap().if_modified_since.is_some());
    }

    #[test]
    fn coded_tags_compare_as_the_tag_they_were_coded_from() {
        let tag = EntityTag::strong("v1").gzip();
        assert_eq!(tag.to_string(), "\"v1-gzip\"");
        let c = cond(&[("if-match", &tag.to_string())]);
        assert_eq!(c.if_match, Some(TagCondition::Tags(vec![EntityTag::strong("v1")])));
        assert!(c.if_match_names_a_tag());
        assert!(!cond(&[("if-match", "*")]).if_match_names_a_tag());
    }

    #[test]
    fn malformed_dates_are_ignored() {
        let c = cond(&[("if-modified-since", "yesterday"), ("if-unmodified-since", "soon")]);
        assert!(c.is_empty());
    }

    #[test]
    fn strong_and_weak_comparison() {
        let s = EntityTag::strong("x");
        let w = EntityTag::weak("x");
        assert!(s.strong_eq(&s));
        assert!(!s.strong_eq(&w) && !w.strong_eq(&w));
        assert!(s.weak_eq(&w) && w.weak_eq(&w));
    }

    #[test]
    fn if_match_is_strong_and_star_means_exists() {
        let cur = current();
        let get = Method::GET;
        assert_eq!(
            evaluate(&get, &cond(&[("if-match", "\"v1\"")]), Some(&cur)),
            PreconditionOutcome::Proceed
        );
        assert_eq!(
            evaluate(&get, &cond(&[("if-match", "W/\"v1\"")]), Some(&cur)),
            PreconditionOutcome::Failed
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-match", "\"v0\"")]), Some(&cur)),
            PreconditionOutcome::Failed
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-match", "*")]), Some(&cur)),
            PreconditionOutcome::Proceed
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-match", "*")]), None),
            PreconditionOutcome::Failed
        );
    }

    #[test]
    fn if_none_match_is_weak_304_on_reads_412_on_writes() {
        let cur = current();
        let c = cond(&[("if-none-match", "W/\"v1\"")]);
        assert_eq!(evaluate(&Method::GET, &c, Some(&cur)), PreconditionOutcome::NotModified);
        assert_eq!(
            evaluate(&Method::HEAD, &c, Some(&cur)),
            PreconditionOutcome::NotModified
        );
        assert_eq!(evaluate(&Method::PUT, &c, Some(&cur)), PreconditionOutcome::Failed);
        let star = cond(&[("if-none-match", "*")]);
        assert_eq!(
            evaluate(&Method::PUT, &star, None),
            PreconditionOutcome::Proceed,
            "create-only PUT"
        );
        assert_eq!(evaluate(&Method::PUT, &star, Some(&cur)), PreconditionOutcome::Failed);
    }

    #[test]
    fn dates() {
        let cur = current();
        let at = |secs: u64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        let ims_same = at(1_000_000);
        let ims_before = at(999_999);
        assert_eq!(
            evaluate(&Method::GET, &cond(&[("if-modified-since", &ims_same)]), Some(&cur)),
            PreconditionOutcome::NotModified
        );
        assert_eq!(
            evaluate(&Method::GET, &cond(&[("if-modified-since", &ims_before)]), Some(&cur)),
            PreconditionOutcome::Proceed
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-modified-since", &ims_same)]), Some(&cur)),
            PreconditionOutcome::Proceed,
            "If-Modified-Since applies to GET/HEAD only"
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-unmodified-since", &ims_before)]), Some(&cur)),
            PreconditionOutcome::Failed
        );
        assert_eq!(
            evaluate(&Method::PUT, &cond(&[("if-unmodified-since", &ims_same)]), Some(&cur)),
            PreconditionOutcome::Proceed
        );
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_is_present() {
        let cur = current();
        let c = cond(&[
            ("if-none-match", "\"other\""),
            (
                "if-modified-since",
                &http_date(UNIX_EPOCH + Duration::from_secs(2_000_000)),
            ),
        ]);
        assert_eq!(evaluate(&Method::GET, &c, Some(&cur)), PreconditionOutcome::Proceed);
    }

    #[test]
    fn if_unmodified_since_is_ignored_when_if_match_is_present() {
        let cur = current();
        let c = cond(&[("if-match", "\"v1\""), ("if-unmodified-since", &http_date(UNIX_EPOCH))]);
        assert_eq!(evaluate(&Method::PUT, &c, Some(&cur)), PreconditionOutcome::Proceed);
    }
}
