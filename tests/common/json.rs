//! Just enough JSON to read the bench tool's `--json` reports (the crate has
//! no JSON dependency); parsing also proves the output is well-formed.
//! A copy of the parser in tests/bench.rs, shared here so the bench tests
//! in other files can use it; tests/bench.rs should switch to this one.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let value = p.value();
        p.space();
        assert_eq!(p.at, p.s.len(), "trailing bytes after the JSON value");
        value
    }

    /// The value at a dotted path; panics if absent.
    pub fn get(&self, path: &str) -> &Json {
        path.split('.').fold(self, |node, key| match node {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no field {key} in {path}")),
            other => panic!("{path}: {other:?} is not an object"),
        })
    }

    pub fn num(&self, path: &str) -> f64 {
        match self.get(path) {
            Json::Num(n) => *n,
            other => panic!("{path}: {other:?} is not a number"),
        }
    }

    pub fn u64(&self, path: &str) -> u64 {
        let n = self.num(path);
        assert!(n >= 0.0 && n.fract() == 0.0, "{path}: {n} is not a count");
        n as u64
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.space();
        assert_eq!(
            self.s.get(self.at),
            Some(&c),
            "expected '{}' at {}",
            c as char,
            self.at
        );
        self.at += 1;
    }

    fn peek(&mut self) -> u8 {
        self.space();
        *self.s.get(self.at).expect("unexpected end of JSON")
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut fields = Vec::new();
                while self.peek() != b'}' {
                    if !fields.is_empty() {
                        self.eat(b',');
                    }
                    let key = self.string();
                    self.eat(b':');
                    fields.push((key, self.value()));
                }
                self.eat(b'}');
                Json::Obj(fields)
            }
            b'[' => {
                self.eat(b'[');
                let mut items = Vec::new();
                while self.peek() != b']' {
                    if !items.is_empty() {
                        self.eat(b',');
                    }
                    items.push(self.value());
                }
                self.eat(b']');
                Json::Arr(items)
            }
            b'"' => Json::Str(self.string()),
            _ => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
                {
                    self.at += 1;
                }
                match &self.s[start..self.at] {
                    b"null" => Json::Null,
                    b"true" => Json::Bool(true),
                    b"false" => Json::Bool(false),
                    number => Json::Num(
                        std::str::from_utf8(number)
                            .ok()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("bad JSON value at {start}")),
                    ),
                }
            }
        }
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = *self.s.get(self.at).expect("unterminated string");
            self.at += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = *self.s.get(self.at).expect("escape");
                    self.at += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.at..self.at + 4]).unwrap();
                            let code = u32::from_str_radix(hex, 16).unwrap();
                            out.push(char::from_u32(code).unwrap());
                            self.at += 4;
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Multi-byte UTF-8 passes through byte by byte.
                    let start = self.at - 1;
                    let len = match c {
                        0xF0.. => 4,
                        0xE0.. => 3,
                        0xC0.. => 2,
                        _ => 1,
                    };
                    out.push_str(std::str::from_utf8(&self.s[start..start + len]).unwrap());
                    self.at = start + len;
                }
            }
        }
    }
}
