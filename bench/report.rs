//! What a run measured, and its three renderings: the human report, the
//! JSON object, and the `.hgrm` files.
//!
//! A scenario fills a [`Report`]: its parameters, named counts, one
//! [`Operation`] per thing it timed (throughput and, where timed, a latency
//! histogram in nanoseconds), and the problems verification found. The
//! renderings never compute anything a scenario could get wrong twice: rates
//! and percentiles come from the same methods for all three.
//!
//! The human shape follows redis-benchmark and wrk2: parameters first, then
//! for each operation its rate, MB/s, and p50 / p90 / p99 / p99.9 / max, then
//! the verification line. MB are 10^6 bytes (payload bytes only).

use crate::args::{MAX_DURATION, Options};
use crate::broker::Broker;
use crate::hgrm;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Latencies are recorded in nanoseconds, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant, valid bounds")
}

/// The percentiles every report shows.
const PERCENTILES: [(&str, &str, f64); 4] = [
    ("p50", "p50", 0.50),
    ("p90", "p90", 0.90),
    ("p99", "p99", 0.99),
    ("p99.9", "p99_9", 0.999),
];

#[derive(Debug, Clone)]
pub enum Param {
    Int(u64),
    Float(f64),
    Text(String),
    Bool(bool),
}

/// One timed operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `publish`, `deliver`, `create`, …
    pub name: &'static str,
    /// What `count` counts: `msgs`, `deliveries`, `topics`, …
    pub unit: &'static str,
    /// Units done in the measured window.
    pub count: u64,
    /// Requests that carried them, when that differs from `count`.
    pub requests: Option<u64>,
    /// Payload bytes moved; `None` when bytes mean nothing here.
    pub bytes: Option<u64>,
    /// From the end of the warmup to the last measured event.
    pub elapsed: Duration,
    /// Nanoseconds; `None` when this operation is not timed one by one.
    pub latency: Option<Histogram<u64>>,
    /// What one latency sample is, e.g. "per request, acknowledgement".
    pub latency_of: &'static str,
}

impl Operation {
    pub fn per_second(&self) -> f64 {
        rate(self.count, self.elapsed)
    }

    pub fn megabytes_per_second(&self) -> Option<f64> {
        self.bytes.map(|b| rate(b, self.elapsed) / 1e6)
    }

    fn json(&self) -> Value {
        let mut o = Map::new();
        o.insert("unit".into(), json!(self.unit));
        o.insert("count".into(), json!(self.count));
        if let Some(requests) = self.requests {
            o.insert("requests".into(), json!(requests));
        }
        o.insert("elapsed_s".into(), number(self.elapsed.as_secs_f64()));
        o.insert("ops_per_s".into(), number(self.per_second()));
        if let (Some(bytes), Some(mb)) = (self.bytes, self.megabytes_per_second()) {
            o.insert("bytes".into(), json!(bytes));
            o.insert("mb_per_s".into(), number(mb));
        }
        if let Some(hist) = &self.latency {
            let mut l = Map::new();
            l.insert("samples".into(), json!(hist.len()));
            if !hist.is_empty() {
                l.insert("min".into(), number(micros(hist.min())));
                l.insert("mean".into(), number(hist.mean() / 1000.0));
                for (_, key, q) in PERCENTILES {
                    l.insert(key.into(), number(micros(hist.value_at_quantile(q))));
                }
                l.insert("max".into(), number(micros(hist.max())));
            }
            o.insert("latency_us".into(), Value::Object(l));
        }
        Value::Object(o)
    }
}

/// Three decimals are all a measurement carries; NaN and infinity, which
/// JSON cannot hold, become null.
fn number(value: f64) -> Value {
    if value.is_finite() {
        json!((value * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    pub params: Vec<(&'static str, Param)>,
    pub counts: Vec<(&'static str, u64)>,
    pub operations: Vec<Operation>,
    /// The operation whose histogram `--hgrm FILE` gets under FILE itself.
    pub primary: &'static str,
    /// One line each; any problem makes the run fail.
    pub problems: Vec<String>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, primary: &'static str) -> Report {
        Report {
            scenario,
            params: Vec::new(),
            counts: Vec::new(),
            operations: Vec::new(),
            primary,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &'static str, value: impl Into<Param>) {
        self.params.push((name, value.into()));
    }

    /// The broker and how long the run was bounded: `messages` when given,
    /// `duration_s` when it bounds the run (else `time_limit_s`, the cap),
    /// and `warmup_s`.
    pub fn bounds(&mut self, broker: &Broker, o: &Options) {
        self.param("broker", broker.addr());
        self.param("in_process", broker.in_process());
        if broker.in_process() {
            use courier::storage::SyncMode;
            // As `--fsync` spells it, so a report says how to repeat it.
            let fsync = match o.fsync {
                None => "memory-only".to_owned(),
                Some(SyncMode::Always) => "always".to_owned(),
                Some(SyncMode::Never) => "never".to_owned(),
                Some(SyncMode::Interval(every)) => format!("interval:{}", every.as_millis()),
            };
            self.param("fsync", fsync);
        }
        if let Some(n) = o.messages {
            self.param("messages", n);
        }
        let capped = o.messages.is_some() && o.duration == MAX_DURATION;
        let name = if capped { "time_limit_s" } else { "duration_s" };
        self.param(name, o.duration.as_secs_f64());
        self.param("warmup_s", o.warmup.as_secs_f64());
    }

    pub fn count(&mut self, name: &'static str, value: u64) {
        self.counts.push((name, value));
    }

    /// Records a problem unless `count` is zero.
    pub fn problem_if(&mut self, count: u64, what: impl FnOnce(u64) -> String) {
        if count > 0 {
            self.problems.push(what(count));
        }
    }

    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "====== {} ======", self.scenario);
        let width = self.params.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (name, value) in &self.params {
            let _ = writeln!(out, "  {name:width$}  {}", value.human());
        }
        for op in &self.operations {
            out.push('\n');
            let _ = write!(out, "{}: {:.0} {}/s", op.name, op.per_second(), op.unit);
            if let Some(mb) = op.megabytes_per_second() {
                let _ = write!(out, ", {mb:.2} MB/s");
            }
            let _ = write!(
                out,
                "\n  {} {} in {:.3} s",
                op.count,
                op.unit,
                op.elapsed.as_secs_f64()
            );
            if let Some(requests) = op.requests {
                let _ = write!(out, " ({requests} requests)");
            }
            out.push('\n');
            if let Some(hist) = op.latency.as_ref().filter(|h| !h.is_empty()) {
                let _ = write!(out, "  latency {} (µs):", op.latency_of);
                for (label, _, q) in PERCENTILES {
                    let _ = write!(out, " {label} {:.1} |", micros(hist.value_at_quantile(q)));
                }
                let _ = writeln!(
                    out,
                    " max {:.1}  (mean {:.1}, {} samples)",
                    micros(hist.max()),
                    hist.mean() / 1000.0,
                    hist.len()
                );
            }
        }
        if !self.counts.is_empty() {
            out.push_str("\ncounts:");
            for (name, value) in &self.counts {
                let _ = write!(out, " {name}={value}");
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.verified() {
            out.push_str("verified: ok\n");
        } else {
            for problem in &self.problems {
                let _ = writeln!(out, "VERIFICATION FAILED: {problem}");
            }
        }
        out
    }

    pub fn json(&self) -> String {
        let params: Map<String, Value> = self
            .params
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Param::Int(v) => json!(v),
                    Param::Float(v) => number(*v),
                    Param::Text(v) => json!(v),
                    Param::Bool(v) => json!(v),
                };
                (name.to_string(), value)
            })
            .collect();
        let counts: Map<String, Value> = self
            .counts
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        let operations: Map<String, Value> = self
            .operations
            .iter()
            .map(|op| (op.name.to_owned(), op.json()))
            .collect();
        json!({
            "scenario": self.scenario,
            "parameters": params,
            "counts": counts,
            "operations": operations,
            "verified": self.verified(),
            "problems": self.problems,
            "notes": self.notes,
        })
        .to_string()
    }

    /// Writes each timed operation's distribution: the primary one to
    /// `path`, the others beside it with the operation's name before the
    /// extension (`run.hgrm` → `run.publish.hgrm`). Returns what was written.
    pub fn write_hgrm(&self, path: &Path) -> Result<Vec<(PathBuf, &'static str)>, String> {
        let mut written = Vec::new();
        for op in &self.operations {
            let Some(hist) = &op.latency else { continue };
            let target = if op.name == self.primary {
                path.to_path_buf()
            } else {
                beside(path, op.name)
            };
            let mut text = Vec::new();
            let result = hgrm::write(&mut text, hist).and_then(|()| std::fs::write(&target, text));
            if let Err(e) = result {
                return Err(format!(
                    "cannot write {}: {}",
                    target.display(),
                    courier::client::io_message(&e)
                ));
            }
            written.push((target, op.name));
        }
        Ok(written)
    }
}

fn beside(path: &Path, name: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let file = match (stem, path.extension()) {
        (Some(stem), Some(ext)) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        (Some(stem), None) => format!("{stem}.{name}"),
        (None, _) => format!("{name}.hgrm"),
    };
    path.with_file_name(file)
}

impl Param {
    fn human(&self) -> String {
        match self {
            Param::Int(v) => v.to_string(),
            Param::Float(v) => format!("{v}"),
            Param::Text(v) => v.clone(),
            Param::Bool(v) => (if *v { "yes" } else { "no" }).to_owned(),
        }
    }
}

impl From<bool> for Param {
    fn from(v: bool) -> Param {
        Param::Bool(v)
    }
}

impl From<u64> for Param {
    fn from(v: u64) -> Param {
        Param::Int(v)
    }
}

impl From<usize> for Param {
    fn from(v: usize) -> Param {
        Param::Int(v as u64)
    }
}

impl From<f64> for Param {
    fn from(v: f64) -> Param {
        Param::Float(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(v.to_owned())
    }
}

impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_take_the_operation_name() {
        assert_eq!(
            beside(Path::new("out/run.hgrm"), "publish"),
            Path::new("out/run.publish.hgrm")
        );
        assert_eq!(beside(Path::new("run"), "ack"), Path::new("run.ack"));
    }

    #[test]
    fn a_problem_fails_the_run_in_both_renderings() {
        let mut report = Report::new("send", "publish");
        report.param("size", 128usize);
        report.count("lost", 3);
        report.problem_if(0, |n| format!("{n} duplicated"));
        assert!(report.verified());
        report.problem_if(3, |n| format!("{n} lost"));
        assert!(!report.verified());
        let json: Value = serde_json::from_str(&report.json()).expect("valid JSON");
        assert_eq!(json["verified"], json!(false));
        assert_eq!(json["problems"], json!(["3 lost"]));
        assert_eq!(json["parameters"], json!({"size": 128}));
        assert!(report.human().contains("VERIFICATION FAILED: 3 lost"));
    }

    #[test]
    fn rates_of_an_empty_window_are_zero() {
        let op = Operation {
            name: "publish",
            unit: "msgs",
            count: 10,
            requests: None,
            bytes: Some(100),
            elapsed: Duration::ZERO,
            latency: None,
            latency_of: "",
        };
        assert_eq!(op.per_second(), 0.0);
        assert_eq!(op.megabytes_per_second(), Some(0.0));
    }
}
