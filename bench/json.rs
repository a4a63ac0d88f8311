//! A tiny JSON writer: objects, arrays of strings, strings, numbers — what the report
//! needs, without a serde_json dependency.
//!
//! An [`Object`] or [`Array`] writes its opening bracket when made and its
//! closing one when dropped, so nesting is always balanced; the borrow of
//! the output string keeps a parent from writing while a child is open.

use std::fmt::Write;

pub struct Object<'a> {
    out: &'a mut String,
    empty: bool,
}

pub struct Array<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        string(self.key(key), value);
    }

    pub fn u64(&mut self, key: &str, value: u64) {
        let _ = write!(self.key(key), "{value}");
    }

    /// Finite numbers with three decimals; others (NaN, infinity) as null.
    pub fn f64(&mut self, key: &str, value: f64) {
        number(self.key(key), value);
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key).push_str(if value { "true" } else { "false" });
    }

    pub fn object(&mut self, key: &str) -> Object<'_> {
        Object::new(self.key(key))
    }

    pub fn array(&mut self, key: &str) -> Array<'_> {
        let out = self.key(key);
        out.push('[');
        Array { out, empty: true }
    }
}

impl Drop for Object<'_> {
    fn drop(&mut self) {
        self.out.push('}');
    }
}

impl Array<'_> {
    fn item(&mut self) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out
    }

    pub fn str(&mut self, value: &str) {
        string(self.item(), value);
    }
}

impl Drop for Array<'_> {
    fn drop(&mut self) {
        self.out.push(']');
    }
}

fn number(out: &mut String, value: f64) {
    if value.is_finite() {
        let _ = write!(out, "{value:.3}");
    } else {
        out.push_str("null");
    }
}

fn string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_and_escapes() {
        let mut out = String::new();
        {
            let mut root = Object::new(&mut out);
            root.str("name", "a \"b\"\n\u{1}");
            root.u64("n", 3);
            root.f64("rate", 1.5);
            root.f64("nan", f64::NAN);
            {
                let mut inner = root.object("inner");
                inner.bool("ok", true);
            }
            let mut list = root.array("list");
            list.str("x");
            list.str("y");
        }
        assert_eq!(
            out,
            r#"{"name":"a \"b\"\n\u0001","n":3,"rate":1.500,"nan":null,"inner":{"ok":true},"list":["x","y"]}"#
        );
    }
}
