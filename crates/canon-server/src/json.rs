//! Strict JSON for request bodies: Canon keeps every number it accepts
//! exactly and refuses what it cannot keep (see `docs/decisions.md`,
//! "Numbers").
//!
//! [`parse`] reads RFC 8259 JSON and, on top of the grammar:
//!
//! - integers (no fraction, no exponent) must fit `i64` or `u64`;
//! - other numbers must be finite and denote exactly the decimal that the
//!   shortest round-trip form of their `f64` denotes (`0.1` and `1.5e10` are
//!   kept; `0.1000000000000000000001` is refused);
//! - numbers are canonical: an integral value is an integer (`1.0` → `1`,
//!   `1e2` → `100`) and `-0` is `0`, so that two numbers are equal exactly
//!   when their values are ([`canonicalize`] applies the same rule to values
//!   from elsewhere);
//! - nesting deeper than [`MAX_DEPTH`] is refused;
//! - an object with two members of the same name is refused.
//!
//! Every refusal names the JSON pointer of the offending value.
//! `serde_json`'s `arbitrary_precision` is deliberately not used: it would
//! change `Number` for the whole dependency graph.

use serde_json::{Map, Number, Value};

/// The deepest nesting of arrays and objects a body may have.
pub const MAX_DEPTH: usize = 64;

/// Why a number cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Infinite as an `f64` (`1e400`), or a non-zero value that would
    /// become zero (`1e-400`).
    OutOfRange,
    /// An integer (no fraction, no exponent) beyond 64 bits.
    InexactInteger,
    /// A decimal that no `f64` denotes exactly.
    Inexact,
}

impl NumberError {
    /// A sentence for problem details.
    pub fn describe(self) -> &'static str {
        match self {
            NumberError::OutOfRange => {
                "number out of range: Canon stores finite double-precision numbers (magnitude up to about 1.8e308)"
            }
            NumberError::InexactInteger => {
                "number cannot be stored exactly: an integer must lie between -9223372036854775808 and 18446744073709551615 (send larger values as strings)"
            }
            NumberError::Inexact => {
                "number cannot be stored exactly: no double-precision number has this decimal value; write it as a double prints (at most 17 significant digits, e.g. 0.1), or send it as a string"
            }
        }
    }
}

/// What is wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON: `what` at 1-based `line` and `column`.
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in bytes).
        column: usize,
        /// What was expected or found.
        what: String,
    },
    /// A number Canon cannot keep, at `pointer`.
    Number {
        /// JSON pointer of the number.
        pointer: String,
        /// Why.
        error: NumberError,
    },
    /// Arrays or objects nested deeper than [`MAX_DEPTH`]; `pointer` is the
    /// first value too deep.
    TooDeep {
        /// JSON pointer of the first value nested too deep.
        pointer: String,
    },
    /// An object has two members named alike; `pointer` is the second.
    Duplicate {
        /// JSON pointer of the repeated member.
        pointer: String,
    },
}

impl JsonError {
    /// The JSON pointer of the offending value, when there is one.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            JsonError::Syntax { .. } => None,
            JsonError::Number { pointer, .. } | JsonError::TooDeep { pointer } | JsonError::Duplicate { pointer } => {
                Some(pointer)
            }
        }
    }

    /// What is wrong, without the position.
    pub fn describe(&self) -> String {
        match self {
            JsonError::Syntax { line, column, what } => format!("invalid JSON at line {line} column {column}: {what}"),
            JsonError::Number { error, .. } => error.describe().to_owned(),
            JsonError::TooDeep { .. } => {
                format!("arrays and objects are nested deeper than {MAX_DEPTH} levels")
            }
            JsonError::Duplicate { .. } => "the member name appears more than once in its object".to_owned(),
        }
    }
}

/// A path being unwound from the error upwards: segments innermost first.
struct Located {
    error: Located0,
    /// Reversed pointer segments (already escaped).
    segments: Vec<String>,
}

enum Located0 {
    Syntax(usize, String),
    Number(NumberError),
    TooDeep,
    Duplicate,
}

impl Located {
    fn new(error: Located0) -> Self {
        Located {
            error,
            segments: Vec::new(),
        }
    }

    fn under(mut self, segment: impl FnOnce() -> String) -> Self {
        if !matches!(self.error, Located0::Syntax(..)) {
            self.segments.push(segment());
        }
        self
    }
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Parses `bytes` as one strict JSON value (see the module docs).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = position(bytes, e.valid_up_to());
            return Err(JsonError::Syntax {
                line,
                column,
                what: "the body is not valid UTF-8".to_owned(),
            });
        }
    };
    let mut p = Parser {
        b: text.as_bytes(),
        pos: 0,
    };
    let result = p.ws().and_then(|_| p.value(0)).and_then(|v| {
        p.ws()?;
        if p.pos < p.b.len() {
            return Err(p.syntax("trailing characters after the JSON value"));
        }
        Ok(v)
    });
    result.map_err(|l| {
        let pointer: String = l.segments.iter().rev().map(|s| format!("/{s}")).collect();
        match l.error {
            Located0::Syntax(at, what) => {
                let (line, column) = position(bytes, at);
                JsonError::Syntax { line, column, what }
            }
            Located0::Number(error) => JsonError::Number { pointer, error },
            Located0::TooDeep => JsonError::TooDeep { pointer },
            Located0::Duplicate => JsonError::Duplicate { pointer },
        }
    })
}

fn position(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at.min(bytes.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|b| **b != b'\n').count();
    (line, column)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn syntax(&self, what: &str) -> Located {
        Located::new(Located0::Syntax(self.pos, what.to_owned()))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) -> Result<(), Located> {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
        Ok(())
    }

    fn eat(&mut self, c: u8, what: &str) -> Result<(), Located> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(self.syntax("the body ends before the JSON value does"))
        } else {
            Err(self.syntax(what))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Located> {
        match self.peek() {
            None => Err(self.syntax("the body ends before the JSON value does")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.syntax("expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, Located> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.syntax("expected a JSON value"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Located> {
        if depth > MAX_DEPTH {
            return Err(Located::new(Located0::TooDeep));
        }
        self.pos += 1;
        let mut map = Map::new();
        self.ws()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.ws()?;
            if self.peek() != Some(b'"') {
                return Err(if self.peek().is_none() {
                    self.syntax("the body ends before the JSON value does")
                } else {
                    self.syntax("expected a member name in double quotes")
                });
            }
            let key = self.string()?;
            if map.contains_key(&key) {
                return Err(Located::new(Located0::Duplicate).under(|| escape(&key)));
            }
            self.ws()?;
            self.eat(b':', "expected `:` after the member name")?;
            self.ws()?;
            let v = self.value(depth).map_err(|e| e.under(|| escape(&key)))?;
            map.insert(key, v);
            self.ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                None => return Err(self.syntax("the body ends before the JSON value does")),
                Some(_) => return Err(self.syntax("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Located> {
        if depth > MAX_DEPTH {
            return Err(Located::new(Located0::TooDeep));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.ws()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws()?;
            let index = items.len();
            let v = self.value(depth).map_err(|e| e.under(|| index.to_string()))?;
            items.push(v);
            self.ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.syntax("the body ends before the JSON value does")),
                Some(_) => return Err(self.syntax("expected `,` or `]`")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Located> {
        let digits = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.syntax("incomplete \\u escape"))?;
        let mut n = 0u32;
        for d in digits {
            let v = (*d as char)
                .to_digit(16)
                .ok_or_else(|| self.syntax("invalid \\u escape"))?;
            n = n * 16 + v;
        }
        self.pos += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, Located> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.b[start..self.pos]);
            match self.peek() {
                None => return Err(self.syntax("the body ends before the JSON value does")),
                Some(b'"') => {
                    self.pos += 1;
                    // The input is valid UTF-8 and escapes add whole characters.
                    return String::from_utf8(out).map_err(|_| self.syntax("invalid UTF-8 in a string"));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.syntax("the body ends before the JSON value does"))?;
                    self.pos += 1;
                    let ch = match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.b[self.pos..].starts_with(b"\\u") {
                                    return Err(self.syntax("a lone surrogate in a \\u escape"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.syntax("a lone surrogate in a \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.syntax("a lone surrogate in a \\u escape"));
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.syntax("invalid \\u escape"))?
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.syntax("invalid escape in a string"));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => return Err(self.syntax("a control character in a string must be escaped")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, Located> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.syntax("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.syntax("invalid number: a digit must follow the decimal point"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax("invalid number: a digit must follow the exponent"));
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.pos]).map_err(|_| self.syntax("invalid number"))?;
        number(text)
            .map(Value::Number)
            .map_err(|e| Located::new(Located0::Number(e)))
    }
}

/// The canonical number for the JSON number `text` (which must follow the
/// JSON grammar), or why Canon cannot keep it.
pub fn number(text: &str) -> Result<Number, NumberError> {
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Number::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Number::from(u));
        }
        return Err(NumberError::InexactInteger);
    }
    let f: f64 = text.parse().map_err(|_| NumberError::Inexact)?;
    if !f.is_finite() {
        return Err(NumberError::OutOfRange);
    }
    let written = Decimal::of(text);
    if f == 0.0 {
        return if written.digits.is_empty() {
            Ok(Number::from(0))
        } else {
            Err(NumberError::OutOfRange)
        };
    }
    if written != Decimal::of(&format!("{f:e}")) {
        return Err(NumberError::Inexact);
    }
    canonical_f64(f).ok_or(NumberError::OutOfRange)
}

/// The canonical number for a finite `f`: an integer when `f` is integral
/// and fits `i64` or `u64` (`-0.0` is `0`), else `f` itself.
pub fn canonical_f64(f: f64) -> Option<Number> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    if f.fract() == 0.0 {
        if (-TWO_63..TWO_63).contains(&f) {
            return Some(Number::from(f as i64));
        }
        if (0.0..TWO_64).contains(&f) {
            return Some(Number::from(f as u64));
        }
    }
    Number::from_f64(f)
}

/// Rewrites every number in `v` to its canonical form (see [`canonical_f64`]),
/// for values that did not come through [`parse`] (stored before it existed).
pub fn canonicalize(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && let Some(c) = canonical_f64(f)
            {
                *n = c;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        Value::Object(map) => map.values_mut().for_each(canonicalize),
        _ => {}
    }
}

/// Whether `a` and `b` are equal under Canon's one rule: canonical numbers,
/// then structural equality.
pub fn same(a: &Value, b: &Value) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    canonicalize(&mut a);
    canonicalize(&mut b);
    a == b
}

/// A decimal as digits without leading or trailing zeros and a power of ten:
/// `value = ±0.digits × 10^exp`. Zero has no digits.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exp: i64,
}

impl Decimal {
    /// From a JSON number or Rust's `{:e}` output.
    fn of(text: &str) -> Decimal {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => {
                let e = &rest[i + 1..];
                let e = e.strip_prefix('+').unwrap_or(e);
                // Exponents beyond i64 only occur with infinite or zero values,
                // which are settled before decimals are compared.
                let parsed = e
                    .parse::<i64>()
                    .unwrap_or(if e.starts_with('-') { -(1 << 40) } else { 1 << 40 });
                (&rest[..i], parsed.clamp(-(1 << 40), 1 << 40))
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all: String = format!("{int}{frac}");
        let trimmed = all.trim_start_matches('0');
        let leading_zeros = all.len() - trimmed.len();
        let digits = trimmed.trim_end_matches('0').to_owned();
        if digits.is_empty() {
            return Decimal {
                negative: false,
                digits,
                exp: 0,
            };
        }
        // value = 0.<all> × 10^(int.len() + exp); dropping leading zeros shifts it.
        let exp = int.len() as i64 + exp - leading_zeros as i64;
        Decimal { negative, digits, exp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(s: &str) -> Value {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn err(s: &str) -> JsonError {
        parse(s.as_bytes()).expect_err(s)
    }

    #[test]
    fn numbers_are_kept_exactly_or_refused() {
        assert_eq!(ok("9007199254740993"), json!(9007199254740993u64));
        assert_eq!(ok("18446744073709551615"), json!(u64::MAX));
        assert_eq!(ok("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(ok("0.1"), json!(0.1));
        assert_eq!(ok("1.5e10"), json!(15000000000u64));
        assert_eq!(ok("1.0"), json!(1));
        assert_eq!(ok("1e2"), json!(100));
        assert_eq!(ok("-0"), json!(0));
        assert_eq!(ok("-0.0e5"), json!(0));
        assert_eq!(ok("1e20"), json!(1e20));
        assert_eq!(ok("5e-324"), json!(5e-324));
        assert_eq!(ok("1.7976931348623157e308"), json!(f64::MAX));
        assert_eq!(ok("0.30000000000000004"), json!(0.30000000000000004));
        assert_eq!(ok("120.50"), json!(120.5));
        for (bad, e) in [
            ("12345678901234567890123", NumberError::InexactInteger),
            ("18446744073709551616", NumberError::InexactInteger),
            ("-9223372036854775809", NumberError::InexactInteger),
            ("0.1000000000000000000001", NumberError::Inexact),
            ("9007199254740993.0", NumberError::Inexact),
            ("1e400", NumberError::OutOfRange),
            ("-1e400", NumberError::OutOfRange),
            ("1e-400", NumberError::OutOfRange),
            ("1e99999999999999999999999", NumberError::OutOfRange),
        ] {
            assert_eq!(
                err(bad),
                JsonError::Number {
                    pointer: String::new(),
                    error: e
                },
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_the_pointer() {
        let e = err(r#"{"a":[1,{"b/c":1e400}]}"#);
        assert_eq!(e.pointer(), Some("/a/1/b~1c"));
        let e = err(r#"{"a":1,"a":2}"#);
        assert_eq!(e, JsonError::Duplicate { pointer: "/a".into() });
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(matches!(err(&deep), JsonError::TooDeep { .. }));
        let ok64 = format!("{}{}", "[".repeat(64), "]".repeat(64));
        ok(&ok64);
    }

    #[test]
    fn grammar_is_strict() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "'a'",
            "\"\\x\"",
            "nul",
            "[1 2]",
            "1 2",
            "\"\u{1}\"",
            "\"\\ud800\"",
            "NaN",
            "Infinity",
            "{a:1}",
        ] {
            assert!(matches!(err(bad), JsonError::Syntax { .. }), "{bad:?}");
        }
        assert_eq!(
            ok(r#" {"s":"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é"} "#),
            json!({"s": "a\"\\/\u{8}\u{c}\n\r\té😀é"})
        );
        assert!(matches!(parse(b"\"\xff\""), Err(JsonError::Syntax { .. })));
    }

    #[test]
    fn canonicalize_agrees_with_parse() {
        let mut v = json!({"a": 1.0, "b": [-0.0, 2.5, 1e2]});
        canonicalize(&mut v);
        assert_eq!(v, json!({"a": 1, "b": [0, 2.5, 100]}));
        assert!(same(&json!(1.0), &json!(1)));
        assert!(!same(&json!(1), &json!("1")));
    }
}
