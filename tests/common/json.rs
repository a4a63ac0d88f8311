//! The bench's JSON reports, read by dotted paths with serde_json: shared
//! by the tests that run `bench`.

use serde_json::Value;

/// The report, read by dotted paths (`operations.publish.count`).
pub struct Json(Value);

impl Json {
    pub fn parse(text: &str) -> Json {
        Json(serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    /// The value at a dotted path; panics if absent.
    pub fn get(&self, path: &str) -> &Value {
        let pointer = format!("/{}", path.replace('.', "/"));
        self.0
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("no field {path} in {}", self.0))
    }

    pub fn num(&self, path: &str) -> f64 {
        let value = self.get(path);
        value
            .as_f64()
            .unwrap_or_else(|| panic!("{path}: {value} is not a number"))
    }

    pub fn u64(&self, path: &str) -> u64 {
        let value = self.get(path);
        value
            .as_u64()
            .unwrap_or_else(|| panic!("{path}: {value} is not a count"))
    }
}
