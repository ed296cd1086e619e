//! Python literals, as Ansible's INI inventory reads values with
//! `ast.literal_eval`: `2222` is an int, `True` a bool, `None` null,
//! `"a b"` a string, `[1, 'x']` a list, `{'k': 1}` a mapping. Anything that is
//! not a literal (`yes`, `0644`, `hello`) stays the raw string. Tuples and sets
//! become lists and bytes become strings, as Ansible coerces them.

use indexmap::IndexMap;
use minijinja::Value;

/// The value of `text` read as a Python literal, or `None` if it is not one.
pub fn literal_eval(text: &str) -> Option<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        i: 0,
    };
    // Python 3.10+ strips leading spaces and tabs before parsing.
    while p.i < p.s.len() && matches!(p.s[p.i], b' ' | b'\t') {
        p.i += 1;
    }
    let v = p.expr()?;
    p.skip_ws(false);
    (p.i == p.s.len()).then_some(v)
}

/// Small integers as `i64`, so they serialize and compare like YAML ones.
fn int_value(n: i128) -> Value {
    match i64::try_from(n) {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(n),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips blanks and comments; newlines only inside brackets.
    fn skip_ws(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\x0c' => self.i += 1,
                b'\n' | b'\r' if newlines => self.i += 1,
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn eat(&mut self, c: u8, newlines: bool) -> bool {
        self.skip_ws(newlines);
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Option<Value> {
        self.expr_in(false)
    }

    fn expr_in(&mut self, nested: bool) -> Option<Value> {
        self.skip_ws(nested);
        match self.peek()? {
            b'-' | b'+' => {
                let neg = self.peek() == Some(b'-');
                self.i += 1;
                let v = self.expr_in(nested)?;
                if !v.is_number() || v.kind() == minijinja::value::ValueKind::Bool {
                    return None;
                }
                if !neg {
                    return Some(v);
                }
                if let Ok(n) = i128::try_from(v.clone()) {
                    return n.checked_neg().map(int_value);
                }
                f64::try_from(v).ok().map(|f| Value::from(-f))
            }
            b'[' => {
                self.i += 1;
                Some(Value::from(self.items(b']')?))
            }
            b'(' => {
                self.i += 1;
                if self.eat(b')', true) {
                    return Some(Value::from(Vec::<Value>::new()));
                }
                let first = self.expr_in(true)?;
                if self.eat(b')', true) {
                    return Some(first); // a parenthesised value, not a tuple
                }
                if !self.eat(b',', true) {
                    return None;
                }
                let mut rest = self.items(b')')?;
                rest.insert(0, first);
                Some(Value::from(rest))
            }
            b'{' => {
                self.i += 1;
                self.mapping_or_set()
            }
            b'"' | b'\'' => self.strings(),
            b'.' if self.s[self.i..].starts_with(b"...") => {
                self.i += 3;
                Some(Value::from("..."))
            }
            c if c.is_ascii_digit() || c == b'.' => self.number(),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                let word = &self.src[start..self.i];
                match word {
                    "True" => Some(Value::from(true)),
                    "False" => Some(Value::from(false)),
                    "None" => Some(Value::from(())),
                    // `set()`, the empty set (a list, as Ansible coerces sets).
                    "set" if self.s[self.i..].starts_with(b"()") => {
                        self.i += 2;
                        Some(Value::from(Vec::<Value>::new()))
                    }
                    _ if matches!(self.peek(), Some(b'"' | b'\''))
                        && matches!(
                            word.to_ascii_lowercase().as_str(),
                            "u" | "r" | "b" | "br" | "rb"
                        ) =>
                    {
                        self.i = start;
                        self.strings()
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Comma-separated values up to `close`, trailing comma allowed.
    fn items(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            if self.eat(close, true) {
                return Some(out);
            }
            out.push(self.expr_in(true)?);
            if self.eat(close, true) {
                return Some(out);
            }
            if !self.eat(b',', true) {
                return None;
            }
        }
    }

    fn mapping_or_set(&mut self) -> Option<Value> {
        if self.eat(b'}', true) {
            return Some(Value::from_object(IndexMap::<Value, Value>::new()));
        }
        let first = self.expr_in(true)?;
        if self.eat(b':', true) {
            let mut map = IndexMap::new();
            let v = self.expr_in(true)?;
            map.insert(first, v);
            loop {
                if self.eat(b'}', true) {
                    return Some(Value::from_object(map));
                }
                if !self.eat(b',', true) {
                    return None;
                }
                if self.eat(b'}', true) {
                    return Some(Value::from_object(map));
                }
                let k = self.expr_in(true)?;
                if !self.eat(b':', true) {
                    return None;
                }
                let v = self.expr_in(true)?;
                map.insert(k, v);
            }
        }
        // A set literal: Ansible turns it into a list.
        let mut items = vec![first];
        if !self.eat(b'}', true) {
            if !self.eat(b',', true) {
                return None;
            }
            items.extend(self.items(b'}')?);
        }
        let mut seen = Vec::new();
        for v in items {
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        Some(Value::from(seen))
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Option<Value> {
        let mut out = String::new();
        let mut any = false;
        loop {
            self.skip_ws(false);
            let start = self.i;
            let mut raw = false;
            while let Some(c) = self.peek() {
                match c.to_ascii_lowercase() {
                    b'r' => raw = true,
                    b'u' | b'b' => {}
                    _ => break,
                }
                self.i += 1;
            }
            if self.i - start > 2 || !matches!(self.peek(), Some(b'"' | b'\'')) {
                self.i = start;
                break;
            }
            out.push_str(&self.string_body(raw)?);
            any = true;
        }
        any.then(|| Value::from(out))
    }

    fn string_body(&mut self, raw: bool) -> Option<String> {
        let q = self.peek()?;
        let triple = self.s[self.i..].starts_with(&[q, q, q]);
        self.i += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let rest = &self.src[self.i..];
            let c = rest.chars().next()?;
            if c as u32 == q as u32 {
                if !triple {
                    self.i += 1;
                    return Some(out);
                }
                if self.s[self.i..].starts_with(&[q, q, q]) {
                    self.i += 3;
                    return Some(out);
                }
            }
            if c == '\n' && !triple {
                return None;
            }
            self.i += c.len_utf8();
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.src[self.i..].chars().next()?;
            if raw {
                out.push('\\');
                out.push(e);
                self.i += e.len_utf8();
                continue;
            }
            self.i += e.len_utf8();
            match e {
                '\n' => {}
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut n = e.to_digit(8)?;
                    for _ in 0..2 {
                        match self.peek().and_then(|c| (c as char).to_digit(8)) {
                            Some(d) => {
                                n = n * 8 + d;
                                self.i += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(n)?);
                }
                'x' | 'u' | 'U' => {
                    let len = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex = self.src.get(self.i..self.i + len)?;
                    let n = u32::from_str_radix(hex, 16).ok()?;
                    self.i += len;
                    out.push(char::from_u32(n)?);
                }
                'N' => return None, // named escapes: not worth a table
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            // exponent sign: 1e-5
            let c = self.peek().unwrap();
            self.i += 1;
            if matches!(c, b'e' | b'E')
                && matches!(self.peek(), Some(b'+' | b'-'))
                && !self.src[start..self.i].starts_with("0x")
                && !self.src[start..self.i].starts_with("0X")
            {
                self.i += 1;
            }
        }
        let text = &self.src[start..self.i];
        if text.contains("__") || text.ends_with('_') || text.contains("_.") || text.contains("._")
        {
            return None;
        }
        let clean = text.replace('_', "");
        let lower = clean.to_ascii_lowercase();
        let radix = |digits: &str, r: u32| i128::from_str_radix(digits, r).ok().map(int_value);
        if let Some(d) = lower.strip_prefix("0x") {
            return radix(d, 16);
        }
        if let Some(d) = lower.strip_prefix("0o") {
            return radix(d, 8);
        }
        if let Some(d) = lower.strip_prefix("0b") {
            return radix(d, 2);
        }
        // An imaginary number: Ansible keeps complex values as their text.
        if let Some(n) = lower.strip_suffix('j') {
            let real = n.parse::<f64>().is_ok() && !n.starts_with('+');
            return real.then(|| Value::from(text));
        }
        if lower.bytes().all(|c| c.is_ascii_digit()) {
            // Python 3 forbids leading zeros in non-zero decimals (`0644`).
            if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|c| c != b'0') {
                return None;
            }
            return lower.parse::<i128>().ok().map(int_value);
        }
        let valid = lower
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
            && lower.bytes().any(|c| c.is_ascii_digit());
        if !valid {
            return None;
        }
        lower.parse::<f64>().ok().map(Value::from)
    }
}

#[cfg(test)]
mod tests {
    use super::literal_eval;

    fn show(s: &str) -> String {
        match literal_eval(s) {
            Some(v) => serde_json::to_string(&v).unwrap(),
            None => "-".into(),
        }
    }

    #[test]
    fn python_literals() {
        assert_eq!(show("2222"), "2222");
        assert_eq!(show("-5"), "-5");
        assert_eq!(show("1_000"), "1000");
        assert_eq!(show("0x1f"), "31");
        assert_eq!(show("1.5"), "1.5");
        assert_eq!(show("1e3"), "1000.0");
        assert_eq!(show("True"), "true");
        assert_eq!(show("None"), "null");
        assert_eq!(show("'a b'"), "\"a b\"");
        assert_eq!(show("\"a\" 'b'"), "\"ab\"");
        assert_eq!(show("u'x\\n'"), "\"x\\n\"");
        assert_eq!(show("[1, 'x',]"), "[1,\"x\"]");
        assert_eq!(show("(1,)"), "[1]");
        assert_eq!(show("(1)"), "1");
        assert_eq!(show("{'a': 1, 'b': [True]}"), "{\"a\":1,\"b\":[true]}");
        assert_eq!(show("1 # note"), "1");
        // ansible-core 2.19's INI inventory (its inventory_ini target).
        assert_eq!(show("set()"), "[]");
        assert_eq!(show("1j"), "\"1j\"");
        assert_eq!(
            show("[..., 1j, set(), {1, 2}, b'x']"),
            "[\"...\",\"1j\",[],[1,2],\"x\"]"
        );
        for not_literal in [
            "0644", "yes", "true", "hello", "a b", "1.2.3", "[1", "'open", "f'x'", "-'a'",
        ] {
            assert_eq!(show(not_literal), "-", "{not_literal}");
        }
    }
}
