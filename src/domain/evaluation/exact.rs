//! Equality of two JSON texts as run-tests decides it: deep, with integers compared
//! exactly however many digits they have, other numbers as floats within 1e-9 relative.
//! It reads the texts itself, since parsing into `serde_json::Value` rounds big integers.

/// A JSON value whose numbers keep their text.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Deepest nesting read; deeper texts compare unequal.
const MAX_DEPTH: usize = 512;

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_space(&mut self) {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, literal: &str) -> Option<()> {
        self.text[self.at..].starts_with(literal).then(|| {
            self.at += literal.len();
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'n' => self.eat("null").map(|_| Json::Null),
            b't' => self.eat("true").map(|_| Json::Bool(true)),
            b'f' => self.eat("false").map(|_| Json::Bool(false)),
            b'"' => self.string().map(Json::String),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_space();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(Json::Array(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.at += 1;
                let mut fields = Vec::new();
                self.skip_space();
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Some(Json::Object(fields));
                }
                loop {
                    self.skip_space();
                    let key = self.string()?;
                    self.skip_space();
                    self.eat(":")?;
                    fields.push((key, self.value(depth + 1)?));
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Some(Json::Object(fields));
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.number().map(Json::Number),
        }
    }

    /// A string token, decoded by serde_json (escapes, surrogates).
    fn string(&mut self) -> Option<String> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        if bytes.get(start) != Some(&b'"') {
            return None;
        }
        let mut k = start + 1;
        while k < bytes.len() {
            match bytes[k] {
                b'\\' => k += 2,
                b'"' => {
                    self.at = k + 1;
                    return serde_json::from_str(&self.text[start..=k]).ok();
                }
                _ => k += 1,
            }
        }
        None
    }

    fn number(&mut self) -> Option<String> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        while self.at < bytes.len()
            && matches!(
                bytes[self.at],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.at += 1;
        }
        let text = &self.text[start..self.at];
        is_json_number(text).then(|| text.to_string())
    }
}

/// JSON's number grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, with no
/// limit on digits.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut k = usize::from(b.first() == Some(&b'-'));
    let digits = |k: &mut usize| {
        let start = *k;
        while *k < b.len() && b[*k].is_ascii_digit() {
            *k += 1;
        }
        *k - start
    };
    match b.get(k) {
        Some(b'0') => k += 1,
        Some(b'1'..=b'9') => {
            digits(&mut k);
        }
        _ => return false,
    }
    if b.get(k) == Some(&b'.') {
        k += 1;
        if digits(&mut k) == 0 {
            return false;
        }
    }
    if matches!(b.get(k), Some(b'e' | b'E')) {
        k += 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if digits(&mut k) == 0 {
            return false;
        }
    }
    k == b.len()
}

fn parse(text: &str) -> Option<Json> {
    let mut reader = Reader { text, at: 0 };
    let value = reader.value(0)?;
    reader.skip_space();
    (reader.at == text.len()).then_some(value)
}

fn is_integer(text: &str) -> bool {
    !text.contains(['.', 'e', 'E'])
}

fn numbers_equal(a: &str, b: &str) -> bool {
    if is_integer(a) && is_integer(b) {
        let norm = |t: &str| {
            if t == "-0" {
                "0".to_string()
            } else {
                t.to_string()
            }
        };
        return norm(a) == norm(b);
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

fn as_map(fields: &[(String, Json)]) -> std::collections::HashMap<&str, &Json> {
    fields.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

fn equal_values(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => numbers_equal(x, y),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal_values(a, b))
        }
        // As maps: a repeated key's last value counts, as JSON parsers keep it.
        (Json::Object(x), Json::Object(y)) => {
            let (x, y) = (as_map(x), as_map(y));
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal_values(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two JSON texts are equal as run-tests judges; malformed text equals nothing.
pub fn json_equal(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => equal_values(&a, &b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::json_equal;

    #[test]
    fn equality_is_deep_floats_are_close_enough_and_integers_exact() {
        assert!(json_equal("0.30000000000000004", "0.3"));
        assert!(json_equal("10", "10.0"));
        assert!(json_equal("-0", "0"));
        assert!(!json_equal("1.0", "1.001"));
        assert!(json_equal(
            r#"{"a": [1, {"b": "é"}]}"#,
            r#"{"a":[1,{"b":"\u00e9"}]}"#
        ));
        assert!(!json_equal(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#));
        assert!(!json_equal("[1, 2]", "[2, 1]"));
        assert!(!json_equal(r#""1""#, "1"));
        assert!(json_equal(
            "1208925819614629174706176",
            "1208925819614629174706176"
        ));
        assert!(
            !json_equal("1208925819614629174706177", "1208925819614629174706176"),
            "big integers are compared digit by digit"
        );
        assert!(json_equal(
            "1.2089258196146292e24",
            "1208925819614629174706176"
        ));
        assert!(json_equal("null", " null "));
        assert!(!json_equal("[1,", "[1,"), "malformed text equals nothing");
        assert!(!json_equal("01", "1"));
        let huge = "9".repeat(400);
        assert!(json_equal(&huge, &huge), "integers of any length");
        assert!(!json_equal(&huge, &format!("{}8", "9".repeat(399))));
        assert!(!json_equal(r#"{"1":"a","1":"a"}"#, r#"{"1":"a","2":"z"}"#));
        assert!(!json_equal(r#"{"1":"a","2":"z"}"#, r#"{"1":"a","1":"a"}"#));
        assert!(
            json_equal(r#"{"k":1,"k":2}"#, r#"{"k":2}"#),
            "the last value counts"
        );
        for bad in ["1.", ".5", "-", "1e", "+1", "0x1"] {
            assert!(!json_equal(bad, bad), "{bad}");
        }
    }
}
