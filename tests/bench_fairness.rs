//! `bench fairness` end to end: each attack kind on a tiny run against the
//! broker the bench starts in its own process. Only the report's shape is
//! checked — the probe's figures for both phases exist and are numbers, the
//! probe was verified — never how fast anything was.

mod common;

use common::json::{Json, bench_json};
use serde_json::json;
use std::process::Command;

fn fairness(attack: &str) -> Json {
    bench_json(&[
        "fairness",
        "--attack",
        attack,
        "--attackers",
        "2",
        "--baseline-secs",
        "0.5",
        "--duration",
        "0.5",
        "--topics",
        "200",
        "--sessions",
        "200",
    ])
}

fn check(attack: &str) {
    let report = fairness(attack);
    assert_eq!(report.get("scenario"), &json!("fairness"));
    assert_eq!(report.get("parameters.attack"), &json!(attack));
    assert_eq!(report.get("verified"), &json!(true));
    assert_eq!(report.u64("counts.probe_errors"), 0);
    for phase in ["baseline", "attacked"] {
        let latency = format!("operations.{phase}.latency_us");
        assert!(report.u64(&format!("{latency}.samples")) > 0, "{phase}");
        for key in ["p50", "p99", "max"] {
            assert!(
                report.num(&format!("{latency}.{key}")) > 0.0,
                "{phase}.{key}"
            );
        }
        assert!(report.u64(&format!("operations.{phase}.count")) > 0);
    }
    report.u64("operations.attack.count");
    report.u64("counts.attacker_requests");
    report.u64("counts.attacker_errors");
    report.u64("counts.attackers_cut_off");
}

#[test]
fn flood() {
    check("flood");
}

#[test]
fn pulls() {
    check("pulls");
}

#[test]
fn fanout() {
    check("fanout");
}

#[test]
fn churn() {
    check("churn");
}

#[test]
fn unknown_attack_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["fairness", "--attack", "nope"])
        .output()
        .expect("bench runs");
    assert_eq!(out.status.code(), Some(2));
}
