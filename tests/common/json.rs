//! The bench's JSON reports, read by dotted paths with serde_json: shared
//! by the tests that run `bench`.

use serde_json::Value;
use std::process::Command;

/// Runs `bench` with `args` and `--json --quiet`, expects exit status 0, and
/// returns its report.
pub fn bench_json(args: &[&str]) -> Json {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args(["--json", "--quiet"])
        // Never empty the machine's page cache from a test.
        .env("COURIER_BENCH_KEEP_PAGE_CACHE", "1")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "bench {args:?}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Json::parse(stdout.trim())
}

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
