//! CSV lists over HTTP: RFC 4180 (CRLF, quoting), formula cells
//! neutralised, `null` distinct from absent.

mod common;

use common::{OPERATOR, Server, header, world};
use reqwest::Method;
use serde_json::json;

/// A strict RFC 4180 reader: fields with their "was quoted" flag.
fn parse(text: &str) -> Vec<Vec<(String, bool)>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next().expect("closing quote") {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
        }
        loop {
            match chars.next() {
                Some(',') => {
                    row.push((field, quoted));
                    break;
                }
                Some('\r') => {
                    assert_eq!(chars.next(), Some('\n'), "CR without LF");
                    row.push((field, quoted));
                    rows.push(std::mem::take(&mut row));
                    break;
                }
                Some('\n') => panic!("bare LF line end"),
                Some('"') => panic!("quote inside an unquoted field"),
                Some(c) => {
                    assert!(!quoted, "text after a closing quote");
                    field.push(c);
                }
                None => {
                    assert!(field.is_empty() && row.is_empty(), "last record without CRLF");
                    return rows;
                }
            }
        }
    }
}

#[tokio::test]
async fn csv_is_rfc_4180_and_safe_in_spreadsheets() {
    let s = Server::start().await;
    world(&s, "acme").await;
    s.ok_json(
        Method::POST,
        "/v1/tenants/acme/collections",
        OPERATOR,
        Some(json!({"name": "sheet", "schema": {"type": "object"}})),
    )
    .await;
    let records = "/v1/tenants/acme/collections/sheet/records";
    let rows = [
        json!({"n": 1, "text": "=HYPERLINK(\"http://evil.example\",\"click\")", "note": null}),
        json!({"n": 2, "text": "+1", "note": "a,b"}),
        json!({"n": 3, "text": "-2+3", "note": "line\r\nbreak"}),
        json!({"n": 4, "text": "@SUM(A1:A2)", "note": "null"}),
        json!({"n": 5, "text": "\tx", "note": ""}),
        json!({"n": -6, "text": "plain", "nested": {"k": [1, "x"]}}),
    ];
    for r in &rows {
        s.ok_json(Method::POST, records, OPERATOR, Some(r.clone())).await;
    }
    let r = s
        .req(Method::GET, &format!("{records}?sort=n"), Some(OPERATOR))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
    let text = r.text().await.unwrap();
    let table = parse(&text);
    let head: Vec<&str> = table[0].iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        head,
        [
            "id",
            "version",
            "created_at",
            "updated_at",
            "data.n",
            "data.nested",
            "data.note",
            "data.text"
        ]
    );
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let cells = |name: &str| table[1..].iter().map(|r| r[col(name)].clone()).collect::<Vec<_>>();
    let texts: Vec<String> = cells("data.text").into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        texts,
        [
            "plain",
            "'=HYPERLINK(\"http://evil.example\",\"click\")",
            "'+1",
            "'-2+3",
            "'@SUM(A1:A2)",
            "'\tx"
        ]
    );
    let n: Vec<String> = cells("data.n").into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        n,
        ["-6", "1", "2", "3", "4", "5"],
        "numbers stay numbers, -6 is no formula"
    );
    let notes = cells("data.note");
    assert_eq!(notes[0], (String::new(), false), "absent: an empty unquoted field");
    assert_eq!(notes[1], ("null".into(), false), "null: the bare word null");
    assert_eq!(notes[2], ("a,b".into(), true));
    assert_eq!(notes[3], ("line\r\nbreak".into(), true));
    assert_eq!(notes[4], ("null".into(), true), "the string \"null\" is quoted");
    assert_eq!(notes[5], (String::new(), true), "the empty string is quoted");
    assert_eq!(cells("data.nested")[0].0, r#"{"k":[1,"x"]}"#);
}
