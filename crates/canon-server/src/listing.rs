//! Lists: paging parameters, opaque cursors, and rendering a page as JSON,
//! CSV or NDJSON with a `Link: rel="next"` header.

use bytes::Bytes;
use canon_http::Problem;
use canon_http::flow::{Found, Representation};
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use canon_store::{Cursor, Page, PageRequest};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cursor::Binding;
use crate::input::{Query, invalid_query};
use crate::state::App;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: usize = 50;
/// See [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 1000;

/// The media types every list can be served as.
pub const LIST_TYPES: &[MediaType] = &[MediaType::Json, MediaType::Csv, MediaType::Ndjson];

/// A list request's paging parameters, read before the list is known: the
/// cursor is checked once the list's identity is (see [`Paging::open`]).
#[derive(Debug, Clone)]
pub struct Paging {
    limit: usize,
    cursor: Option<String>,
}

/// Reads `limit` and `cursor`.
pub fn page_request(q: &Query) -> Result<Paging, Problem> {
    let limit = match q.one("limit")? {
        None => DEFAULT_LIMIT,
        // Digits only: `+5` or ` 5` is not what a client meant to send.
        Some(s) => match s.parse::<usize>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(invalid_query(
                    "limit",
                    &format!("must be a whole number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let cursor = q.one("cursor")?.map(str::to_owned);
    Ok(Paging { limit, cursor })
}

impl Paging {
    /// The store's page request for the list identified by `scope` (what
    /// the list's cursors are bound to: its kind, tenant, collection,
    /// filters and sort), and the binding that seals the next cursor. A
    /// cursor not issued for this list is a 400.
    pub async fn open(self, app: &App, scope: &[&str]) -> Result<(PageRequest, Binding), Problem> {
        let binding = app.cursor_key().await?.bind(scope);
        let after = self.cursor.as_deref().map(|c| binding.open(c)).transpose()?;
        Ok((
            PageRequest {
                limit: self.limit,
                after,
            },
            binding,
        ))
    }
}

/// Renders a page of `items` (each a JSON text) as `media`, with
/// `next_cursor` and the `Link` header pointing at the next page of `uri`.
/// The JSON and NDJSON bodies are the items' texts joined, byte for byte
/// what serializing their trees would write; CSV reads them back first.
fn page(
    items: Vec<String>,
    next: Option<String>,
    media: MediaType,
    uri: &http::Uri,
) -> Result<Representation, Problem> {
    let link = next.as_ref().map(|c| format!("<{}>; rel=\"next\"", next_url(uri, c)));
    let body = match media {
        MediaType::Csv => {
            let values = items
                .iter()
                .map(|item| serde_json::from_str::<Value>(item))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| crate::error::internal())?;
            Bytes::from(crate::csv_export::write(&values))
        }
        MediaType::Ndjson => {
            let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum());
            for item in &items {
                out.push_str(item);
                out.push('\n');
            }
            Bytes::from(out)
        }
        _ => {
            let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 64);
            out.push_str("{\"items\":");
            json_array(&mut out, &items);
            out.push_str(",\"next_cursor\":");
            out.push_str(&Value::from(next).to_string());
            out.push('}');
            Bytes::from(out)
        }
    };
    let mut rep = Representation::new(media, body);
    rep.links.extend(link);
    rep.vary = Some("Accept");
    rep.cache_control = Some(canon_http::flow::REVALIDATE_PRIVATELY);
    Ok(rep)
}

/// Appends `[item,item,…]`.
fn json_array(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
}

/// A page read at the flow's existence node, so its weak entity tag can
/// answer `If-None-Match` before the page is rendered.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Each item as compact JSON text.
    items: Vec<String>,
    next: Option<String>,
    validators: Validators,
}

impl Listed {
    /// A page of `items` (each a compact JSON text); `next` is the store's
    /// cursor for the rest, sealed by the list's `binding`.
    pub fn new(items: Vec<String>, next: Option<Cursor>, binding: &Binding) -> Listed {
        let next = next.map(|c| binding.seal(&c));
        let validators = page_validators(&items, next.as_deref());
        Listed {
            items,
            next,
            validators,
        }
    }

    /// A store page rendered item by item with `render`.
    pub fn from_page<T>(page: Page<T>, render: impl Fn(&T) -> Value, binding: &Binding) -> Listed {
        Listed::new(
            page.items.iter().map(|item| render(item).to_string()).collect(),
            page.next,
            binding,
        )
    }

    /// A store page whose items `write` appends as JSON text (records, whose
    /// data is kept as text and written as it is).
    pub fn from_page_written<T>(page: Page<T>, write: impl Fn(&mut String, &T), binding: &Binding) -> Listed {
        let items = page
            .items
            .iter()
            .map(|item| {
                let mut text = String::new();
                write(&mut text, item);
                text
            })
            .collect();
        Listed::new(items, page.next, binding)
    }

    /// Keeps the page in `slot` for `execute` and answers the existence
    /// node with its validators.
    pub fn keep(self, slot: &mut Option<Listed>) -> Found {
        let found = Found {
            validators: self.validators.clone(),
            ..Found::default()
        };
        *slot = Some(self);
        found
    }

    /// The page as `media`, carrying its validators.
    pub fn render(self, media: Option<MediaType>, uri: &http::Uri) -> Result<Representation, Problem> {
        let mut rep = page(self.items, self.next, media.unwrap_or(MediaType::Json), uri)?;
        rep.validators = self.validators;
        Ok(rep)
    }
}

/// A weak tag over a page's content (its items as a JSON array, then the
/// next cursor): equal pages are semantically equal whatever media type
/// renders them, not byte-for-byte equal.
fn page_validators(items: &[String], next: Option<&str>) -> Validators {
    let mut array = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    json_array(&mut array, items);
    let mut h = Sha256::new();
    h.update(array.as_bytes());
    h.update(next.unwrap_or("").as_bytes());
    let tag: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    Validators {
        etag: Some(EntityTag::weak(tag)),
        last_modified: None,
    }
}

fn next_url(uri: &http::Uri, cursor: &str) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != "cursor" {
            ser.append_pair(&k, &v);
        }
    }
    ser.append_pair("cursor", cursor);
    format!("{}?{}", uri.path(), ser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(rep: Representation) -> Vec<u8> {
        match rep.body {
            canon_http::body::Body::Full(bytes) => bytes.to_vec(),
            canon_http::body::Body::Streamed(_) => panic!("a page is written whole"),
        }
    }

    #[test]
    fn joined_texts_are_the_bytes_of_the_serialized_trees() {
        let values = vec![
            serde_json::json!({"id": "a", "data": {"x": [1, 2.5, "é\"q"], "y": null}, "version": 1}),
            serde_json::json!({"id": "b", "data": {}, "version": 2}),
        ];
        let texts: Vec<String> = values.iter().map(Value::to_string).collect();
        let uri: http::Uri = "/v1/x".parse().unwrap();
        for next in [None, Some("c1".to_owned())] {
            let rep = page(texts.clone(), next.clone(), MediaType::Json, &uri).unwrap();
            let expected = serde_json::to_vec(&serde_json::json!({"items": values, "next_cursor": next})).unwrap();
            assert_eq!(full(rep), expected);
            // The tag is the one the trees gave: pages cached by clients stay valid.
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&values).unwrap());
            h.update(next.as_deref().unwrap_or("").as_bytes());
            let tag: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                page_validators(&texts, next.as_deref()).etag,
                Some(EntityTag::weak(tag))
            );
        }
        let rep = page(texts, None, MediaType::Ndjson, &uri).unwrap();
        let lines: Vec<u8> = values.iter().flat_map(|v| format!("{v}\n").into_bytes()).collect();
        assert_eq!(full(rep), lines);
    }

    #[test]
    fn next_link_keeps_other_parameters() {
        let uri: http::Uri = "/v1/x?limit=2&cursor=old&filter%5Ba%5D=b".parse().unwrap();
        assert_eq!(next_url(&uri, "new"), "/v1/x?limit=2&filter%5Ba%5D=b&cursor=new");
    }
}
