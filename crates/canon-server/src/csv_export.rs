//! Lists as CSV (RFC 4180), safe to open in a spreadsheet.
//!
//! - Records end with CRLF, the first record is the header.
//! - A field is quoted when it holds `,`, `"`, CR or LF (quotes doubled), and
//!   when a string would otherwise read as something else (see below).
//! - Absent and `null` differ: a member the item does not have is an empty
//!   field; JSON `null` is the bare word `null`. A string is written as
//!   itself, but quoted when it is empty or would read as `null`, `true`,
//!   `false` or a number (`""`, `"null"`, `"80"`), so the three cases stay
//!   apart for a reader that keeps quotes.
//! - Formula injection (OWASP "CSV Injection"): a string that starts with
//!   `=`, `+`, `-`, `@`, a tab or a CR is prefixed with `'`, so a spreadsheet
//!   shows it as text instead of running it. Numbers are written as numbers
//!   (`-5` is not a formula). Nested objects and arrays are compact JSON.

use serde_json::{Map, Value};

/// Characters that make a spreadsheet treat a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Flattens `items` to CSV: top-level members as columns (in order of first
/// appearance), then the members of a `data` object as `data.<field>`
/// columns (sorted). An empty list is an empty body.
pub fn write(items: &[Value]) -> Vec<u8> {
    let mut columns = Columns::default();
    for item in items {
        columns.add(item);
    }
    if columns.is_empty() {
        return Vec::new();
    }
    let mut out = columns.header();
    for item in items {
        columns.write_row(&mut out, item);
    }
    out.into_bytes()
}

/// The columns of a CSV file, found by looking at its items one by one
/// ([`Columns::add`]): what [`write`] does for a page, and an export for a
/// whole collection, in a first pass before the rows.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Columns {
    /// Top-level members other than `data`, in order of first appearance.
    top: Vec<String>,
    /// Members of `data` objects, sorted.
    data: std::collections::BTreeSet<String>,
}

impl Columns {
    /// Adds the columns `item` has.
    pub fn add(&mut self, item: &Value) {
        for (k, v) in item.as_object().into_iter().flatten() {
            if k == "data" && v.is_object() {
                for f in v.as_object().into_iter().flatten().map(|(f, _)| f) {
                    if !self.data.contains(f) {
                        self.data.insert(f.clone());
                    }
                }
            } else if !self.top.contains(k) {
                self.top.push(k.clone());
            }
        }
    }

    /// Whether every member of `item` has its column (a record that gained
    /// a field after the columns were chosen does not).
    pub fn covers(&self, item: &Value) -> bool {
        item.as_object().into_iter().flatten().all(|(k, v)| {
            if k == "data" && v.is_object() {
                v.as_object().into_iter().flatten().all(|(f, _)| self.data.contains(f))
            } else {
                self.top.contains(k)
            }
        })
    }

    /// How many `data` fields have a column.
    pub fn data_fields(&self) -> usize {
        self.data.len()
    }

    /// How many columns there are.
    pub fn len(&self) -> usize {
        self.top.len() + self.data.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn names(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
        self.top
            .iter()
            .map(|c| std::borrow::Cow::Borrowed(c.as_str()))
            .chain(self.data.iter().map(|f| std::borrow::Cow::Owned(format!("data.{f}"))))
    }

    /// The header line.
    pub fn header(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.names().map(|c| text_cell(&c)).collect();
        line(&mut out, &header);
        out
    }

    /// Appends `item`'s line to `out`.
    pub fn write_row(&self, out: &mut String, item: &Value) {
        let empty = Map::new();
        let obj = item.as_object().unwrap_or(&empty);
        let row: Vec<String> = self
            .names()
            .map(|c| {
                let v = match c.strip_prefix("data.") {
                    Some(f) if !obj.contains_key(c.as_ref()) => obj.get("data").and_then(|d| d.get(f)),
                    _ => obj.get(c.as_ref()),
                };
                cell(v)
            })
            .collect();
        line(out, &row);
    }
}

fn line(out: &mut String, cells: &[String]) {
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// One field for `value`: absent → empty, `null` → `null`, strings as text,
/// numbers and booleans as JSON, objects and arrays as compact JSON text.
fn cell(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::String(s)) => text_cell(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(other) => text_cell(&other.to_string()),
    }
}

/// A string field: neutralised against formulas, quoted when needed.
fn text_cell(s: &str) -> String {
    let neutral = if s.starts_with(FORMULA_STARTS) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    let ambiguous = neutral.is_empty()
        || ["null", "true", "false"]
            .iter()
            .any(|w| neutral.eq_ignore_ascii_case(w))
        || serde_json::from_str::<serde_json::Number>(&neutral).is_ok();
    if ambiguous || neutral.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv(items: &[Value]) -> String {
        String::from_utf8(write(items)).unwrap()
    }

    #[test]
    fn flattens_data_with_crlf_and_quoting() {
        let items = vec![
            json!({"id": "r1", "data": {"b": 1, "a": "x,y"}, "version": 1}),
            json!({"id": "r2", "data": {"c": {"n": true}, "a": "say \"hi\"\r\nbye"}, "version": 2}),
        ];
        assert_eq!(
            csv(&items),
            "id,version,data.a,data.b,data.c\r\n\
             r1,1,\"x,y\",1,\r\n\
             r2,2,\"say \"\"hi\"\"\r\nbye\",,\"{\"\"n\"\":true}\"\r\n"
        );
    }

    #[test]
    fn formulas_are_neutralised_and_numbers_kept() {
        let items = vec![json!({"data": {
            "a": "=1+1", "b": "+1", "c": "-2", "d": "@SUM(A1)", "e": "\tx", "f": "\rx",
            "g": -5, "h": "ok", "i": "=HYPERLINK(\"x\")"
        }})];
        let out = csv(&items);
        let row = out.split("\r\n").nth(1).unwrap();
        assert_eq!(
            row,
            "'=1+1,'+1,'-2,'@SUM(A1),'\tx,\"'\rx\",-5,ok,\"'=HYPERLINK(\"\"x\"\")\""
        );
    }

    #[test]
    fn columns_know_whether_they_cover_an_item() {
        let mut columns = Columns::default();
        columns.add(&json!({"id": "a", "data": {"x": 1}}));
        assert!(columns.covers(&json!({"id": "b", "data": {"x": 2}})));
        assert!(columns.covers(&json!({"id": "b", "data": {}})));
        assert!(!columns.covers(&json!({"id": "b", "data": {"x": 2, "late": true}})));
        assert!(!columns.covers(&json!({"id": "b", "extra": 1})));
        assert_eq!((columns.len(), columns.data_fields()), (2, 1));
    }

    #[test]
    fn null_absent_and_look_alike_strings_differ() {
        let items = vec![
            json!({"data": {"v": null}}),
            json!({"data": {}}),
            json!({"data": {"v": "null"}}),
            json!({"data": {"v": ""}}),
            json!({"data": {"v": "80"}}),
            json!({"data": {"v": 80}}),
            json!({"data": {"v": true}}),
            json!({"data": {"v": "true"}}),
            json!({"data": {"v": "TRUE"}}),
            json!({"data": {"v": "Null"}}),
        ];
        assert_eq!(
            csv(&items),
            "data.v\r\nnull\r\n\r\n\"null\"\r\n\"\"\r\n\"80\"\r\n80\r\ntrue\r\n\"true\"\r\n\"TRUE\"\r\n\"Null\"\r\n"
        );
        assert_eq!(csv(&[]), "");
    }
}
