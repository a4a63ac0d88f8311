//! The bench tool end to end: each scenario on a tiny run against the broker
//! it starts in its own process, checking the report's counts and JSON
//! fields. Speed is never asserted — only that what was measured adds up and
//! was verified.
//!
//! The JSON is read with serde_json, which also proves it well-formed.

mod common;

use common::json::{Json, bench_json};
use serde_json::json;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        // Never empty the machine's page cache from a test.
        .env("COURIER_BENCH_KEEP_PAGE_CACHE", "1")
        .output()
        .expect("bench runs")
}

/// Runs a scenario with `--json --quiet`, expects success and a verified
/// run, returns the JSON.
fn json(args: &[&str]) -> Json {
    let report = bench_json(args);
    assert_eq!(report.get("verified"), &json!(true));
    assert_eq!(report.get("problems"), &json!([]));
    report
}

fn assert_latency(report: &Json, op: &str, samples: u64) {
    let at = |key: &str| format!("operations.{op}.latency_us.{key}");
    assert_eq!(report.u64(&at("samples")), samples, "{op}");
    for key in ["min", "mean", "p50", "p90", "p99", "p99_9", "max"] {
        assert!(report.num(&at(key)) > 0.0, "{op}.{key}");
    }
    let (p50, p99, max) = (
        report.num(&at("p50")),
        report.num(&at("p99")),
        report.num(&at("max")),
    );
    assert!(p50 <= p99 && p99 <= max);
}

#[test]
fn send_counts_every_acknowledged_publish() {
    let report = json(&[
        "send",
        "--messages",
        "300",
        "--publishers",
        "2",
        "--pipeline",
        "4",
        "--batch",
        "10",
    ]);
    assert_eq!(report.get("scenario"), &json!("send"));
    assert_eq!(report.u64("parameters.publishers"), 2);
    assert_eq!(report.get("parameters.in_process"), &json!(true));
    assert_eq!(report.u64("counts.published"), 300);
    assert_eq!(report.u64("counts.requests"), 30);
    assert_eq!(report.u64("counts.lost"), 0);
    assert_eq!(report.u64("operations.publish.count"), 300);
    assert_eq!(report.u64("operations.publish.requests"), 30);
    assert_eq!(report.u64("operations.publish.bytes"), 300 * 128);
    assert!(report.num("operations.publish.ops_per_s") > 0.0);
    assert!(report.num("operations.publish.mb_per_s") > 0.0);
    assert_latency(&report, "publish", 30);
}

#[test]
fn send_one_at_a_time() {
    let report = json(&[
        "send",
        "--messages",
        "200",
        "--pipeline",
        "1",
        "--size",
        "20",
    ]);
    assert_eq!(report.u64("counts.published"), 200);
    assert_eq!(report.u64("operations.publish.bytes"), 200 * 20);
    assert_latency(&report, "publish", 200);
}

#[test]
fn fanout_delivers_each_message_to_each_subscriber_of_its_topic() {
    // Two topics: subscribers 0 and 2 take topic 0, subscriber 1 topic 1;
    // each publisher has its own topic, with 150 messages each.
    let report = json(&[
        "fanout",
        "--messages",
        "300",
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--topics",
        "2",
        "--batch",
        "7",
    ]);
    assert_eq!(report.u64("counts.published"), 300);
    assert_eq!(report.u64("counts.expected_deliveries"), 450);
    assert_eq!(report.u64("counts.delivered"), 450);
    for key in ["lost", "duplicated", "reordered"] {
        assert_eq!(report.u64(&format!("counts.{key}")), 0, "{key}");
    }
    assert_eq!(report.u64("operations.deliver.count"), 450);
    assert_eq!(report.u64("operations.deliver.bytes"), 450 * 128);
    assert_latency(&report, "deliver", 450);
    assert_eq!(report.u64("operations.publish.count"), 300);
}

#[test]
fn fanout_with_more_topics_than_clients() {
    let report = json(&[
        "fanout",
        "--messages",
        "240",
        "--publishers",
        "2",
        "--subscribers",
        "2",
        "--topics",
        "5",
        "--pipeline",
        "3",
    ]);
    assert_eq!(report.u64("counts.published"), 240);
    assert_eq!(report.u64("counts.delivered"), 240);
}

#[test]
fn latency_runs_at_a_fixed_rate() {
    let report = json(&["latency", "--rate", "4000", "--messages", "200"]);
    assert_eq!(report.num("parameters.rate"), 4000.0);
    // Sends keep to the schedule with this many acks outstanding.
    assert_eq!(report.u64("parameters.pipeline"), 64);
    assert_eq!(report.u64("counts.published"), 200);
    assert_eq!(report.u64("counts.delivered"), 200);
    assert_latency(&report, "publish", 200);
    assert_latency(&report, "deliver", 200);
    let lag = report.u64("counts.send_lag_max_ns");
    assert!(report.u64("counts.send_lag_p50_ns") <= lag);
    // 200 messages at 4000/s take about 50 ms; far less would mean the
    // schedule was not kept.
    assert!(report.num("operations.publish.elapsed_s") >= 0.04);
}

#[test]
fn latency_takes_a_pull_depth_and_a_relay_mode() {
    for depth in ["1", "4"] {
        // A window of one: each send waits for the last ack, and loses
        // nothing for it.
        let report = json(&[
            "latency",
            "--rate",
            "4000",
            "--messages",
            "200",
            "--pull-depth",
            depth,
            "--pipeline",
            depth,
        ]);
        assert_eq!(report.u64("parameters.pull_depth").to_string(), depth);
        assert_eq!(report.u64("parameters.pipeline").to_string(), depth);
        assert_eq!(report.u64("counts.published"), 200);
        assert_eq!(report.u64("counts.delivered"), 200);
        assert_eq!(report.u64("counts.lost"), 0);
    }
    let relay = json(&["latency", "--rate", "4000", "--messages", "200", "--relay"]);
    assert_eq!(relay.get("parameters.mode"), &json!("relay"));
    assert_eq!(relay.u64("counts.published"), 200);
    assert_eq!(relay.u64("counts.delivered"), 200);
    assert_latency(&relay, "deliver", 200);
    // Only where it means something.
    let refused = bench(&["send", "--relay"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn create_topic_times_create_delete_pairs() {
    for pipeline in ["1", "6"] {
        let report = json(&[
            "create-topic",
            "--clients",
            "2",
            "--messages",
            "200",
            "--pipeline",
            pipeline,
        ]);
        assert_eq!(report.u64("counts.created"), 200, "pipeline {pipeline}");
        assert_eq!(report.u64("counts.deleted"), 200);
        // One measured operation: the pair, never two halves with the same
        // figures.
        let operations = report.get("operations").as_object().expect("object");
        assert_eq!(operations.keys().collect::<Vec<_>>(), ["create_delete"]);
        assert_eq!(report.get("operations.create_delete.unit"), &json!("pairs"));
        assert_eq!(report.u64("operations.create_delete.count"), 200);
        assert_eq!(report.u64("operations.create_delete.requests"), 400);
        assert_latency(&report, "create_delete", 200);
    }
}

#[test]
fn idle_opens_the_connections_asked() {
    let report = json(&["idle", "--connections", "30"]);
    assert_eq!(report.u64("counts.connections"), 30);
    assert_eq!(report.u64("counts.broker_connections"), 30);
    assert_latency(&report, "connect", 30);
}

#[test]
fn retained_messages_are_counted_by_the_broker_then_drained() {
    let report = json(&[
        "retained",
        "--messages",
        "500",
        "--topics",
        "3",
        "--batch",
        "40",
        "--size",
        "64",
    ]);
    assert_eq!(report.u64("counts.retained"), 500);
    assert_eq!(report.u64("counts.broker_backlog_messages"), 500);
    assert_eq!(report.u64("counts.broker_backlog_bytes"), 500 * 64);
    assert_eq!(report.u64("counts.delivered"), 500);
    assert_eq!(report.u64("operations.deliver.count"), 500);
}

#[test]
fn replay_reads_a_retained_topic_from_the_start() {
    let report = json(&[
        "replay",
        "--messages",
        "700",
        "--size",
        "100",
        "--batch",
        "64",
    ]);
    assert_eq!(report.u64("counts.replayed"), 700);
    assert_eq!(report.u64("counts.fetched"), 700);
    for operation in ["replay", "fetch"] {
        assert_eq!(report.u64(&format!("operations.{operation}.count")), 700);
        assert_eq!(report.u64(&format!("operations.{operation}.bytes")), 70_000);
    }
}

/// `--cache-bytes`: a durable broker, the topic 30 caches long, so the
/// reads come from the log, and the report's STATS counts prove it; from a
/// cold cache too when this process may drop the page cache, else a note
/// says why not.
#[test]
fn replay_from_disk_reads_the_log_and_says_so() {
    let report = json(&[
        "replay",
        "--cache-bytes",
        "64KiB",
        "--messages",
        "2000",
        "--fsync",
        "never",
    ]);
    assert_eq!(report.u64("parameters.cache_bytes"), 64 << 10);
    assert_eq!(report.get("parameters.fsync"), &json!("never"));
    assert!(report.u64("counts.messages_evicted") > 0);
    assert_eq!(report.u64("counts.replayed"), 2000);
    assert_eq!(report.u64("counts.fetched"), 2000);
    let mut reads = vec!["replay", "fetch"];
    let operations = report.get("operations");
    let cold = operations.get("replay_cold").is_some();
    if cold {
        reads.extend(["replay_cold", "fetch_cold"]);
        // The replays' sessions, subscriptions and acks are logged too.
        assert!(
            report.u64("operations.log_read_cold_again.bytes") >= report.u64("counts.log_bytes")
        );
        assert_eq!(
            report.u64("operations.log_read_cold.bytes"),
            report.u64("counts.log_bytes")
        );
    } else {
        let notes = report.get("notes").as_array().expect("notes are a list");
        assert!(
            notes
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.contains("not measured")))
        );
    }
    assert!(report.u64("counts.log_bytes") > 2000 * 1024);
    assert_eq!(
        report.u64("operations.log_read.bytes"),
        report.u64("counts.log_bytes")
    );
    for read in reads {
        assert_eq!(report.u64(&format!("operations.{read}.count")), 2000);
        assert_eq!(report.u64(&format!("operations.{read}.bytes")), 2000 * 1024);
        assert!(report.num(&format!("operations.{read}.mb_per_s")) > 0.0);
        assert!(
            report.u64(&format!("counts.{read}_disk_reads")) > 0,
            "{read}"
        );
        // Most of them from the log (a FETCH may read some twice: a reply
        // stops at a frame, the next fetch reads on from there).
        let from_disk = report.u64(&format!("counts.{read}_disk_messages"));
        assert!(from_disk > 1000, "{read}: {from_disk}");
    }
    // It is the in-process broker's option.
    let given = bench(&["replay", "--cache-bytes", "1MiB", "--broker", "127.0.0.1:1"]);
    assert_eq!(given.status.code(), Some(2));
}

#[test]
fn human_report_has_rates_and_percentiles() {
    let out = bench(&["fanout", "--messages", "200", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"====== fanout ======"));
    for op in ["publish:", "deliver:"] {
        let at = lines.iter().position(|l| l.starts_with(op)).expect(op);
        assert!(lines[at].contains("/s") && lines[at].contains("MB/s"));
        let latency = lines[at + 2];
        for label in ["p50", "p90", "p99", "p99.9", "max"] {
            assert!(latency.contains(label), "{latency}");
        }
    }
    assert_eq!(lines.last(), Some(&"verified: ok"));
}

#[test]
fn hgrm_files_have_the_percentile_distribution_format() {
    let dir = std::env::temp_dir().join(format!("bench-hgrm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("run.hgrm");
    let path_text = path.to_string_lossy().into_owned();
    json(&["fanout", "--messages", "200", "--hgrm", &path_text]);
    let side: PathBuf = dir.join("run.publish.hgrm");
    for (file, total) in [(&path, 200), (&side, 200)] {
        let text = std::fs::read_to_string(file).expect("histogram written");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<&str>> = lines
            .clone()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let last = rows.last().expect("rows");
        assert_eq!(last.len(), 3, "the last row has no 1/(1-p) column");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2].parse::<u64>().ok(), Some(total));
        assert!(rows[..rows.len() - 1].iter().all(|r| r.len() == 4));
        let footer: Vec<&str> = lines.filter(|l| l.starts_with("#[")).collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[0].starts_with("#[Mean    ="));
        assert!(footer[1].starts_with("#[Max     ="));
        assert!(footer[2].starts_with("#[Buckets ="));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_with_2() {
    for args in [
        &[][..],
        &["nonsense"],
        &["send", "--size", "19"],
        &["send", "--duration", "3601"],
        &["send", "--rate", "10"],
        &["send", "--messages", "0"],
        &["send", "--bogus"],
        &["fanout", "--subscribers", "0"],
        &["idle", "--broker-pid", "1"],
        &[
            "fanout",
            "--size",
            "65536",
            "--batch",
            "100",
            "--messages",
            "10",
        ],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "bench {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("bench: "), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_exists_for_the_tool_and_each_scenario() {
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["fanout", "--help"],
        &["latency", "--help"],
        &["create-topic", "--help"],
        &["idle", "--help"],
        &["retained", "-h"],
        &["recovery", "--help"],
        &["disk", "--help"],
        &["replay", "--help"],
        &["backlog", "--help"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(0), "bench {args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("usage: bench"));
    }
}

#[test]
fn an_unreachable_broker_is_a_runtime_failure() {
    // A port that was free a moment ago: nobody listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = bench(&["send", "--broker", &addr, "--messages", "10", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// Each durable mode of the in-process broker runs, verifies, and says in
/// the report which mode it was.
#[test]
fn durable_modes_run_and_are_reported() {
    for mode in ["always", "interval:5", "never", "memory-only"] {
        let report = json(&[
            "send",
            "--messages",
            "200",
            "--batch",
            "10",
            "--fsync",
            mode,
        ]);
        assert_eq!(report.get("parameters.fsync"), &json!(mode), "{mode}");
        assert_eq!(report.u64("counts.published"), 200, "{mode}");
        assert_eq!(report.u64("counts.lost"), 0, "{mode}");
        assert_latency(&report, "publish", 20);
    }
    let report = json(&[
        "fanout",
        "--messages",
        "500",
        "--batch",
        "50",
        "--fsync",
        "always",
    ]);
    assert_eq!(report.get("parameters.fsync"), &json!("always"));
    assert_eq!(report.u64("counts.published"), 500);
}

#[test]
fn recovery_rebuilds_every_message_and_reports_its_speed() {
    let report = json(&["recovery", "--messages", "2000", "--batch", "100"]);
    assert_eq!(report.get("scenario"), &json!("recovery"));
    assert_eq!(report.u64("parameters.messages"), 2000);
    assert_eq!(report.u64("counts.messages_rebuilt"), 2000);
    // A topic, a session, a subscription and 20 batches at least.
    assert!(report.u64("counts.records") >= 23);
    assert!(report.u64("counts.segments") >= 1);
    assert_eq!(report.u64("operations.recover.count"), 2000);
    assert!(report.u64("operations.recover.bytes") > 2000 * 128);
    assert!(report.num("operations.recover.mb_per_s") > 0.0);
}

#[test]
fn backlog_catches_up_from_disk_beside_the_probe() {
    let report = json(&[
        "backlog",
        "--cache-bytes",
        "256KiB",
        "--messages",
        "3000",
        "--size",
        "1024",
        "--duration",
        "0.3",
        "--fsync",
        "never",
    ]);
    assert_eq!(report.get("scenario"), &json!("backlog"));
    assert_eq!(report.u64("parameters.cache_bytes"), 256 << 10);
    // 3 MB behind a 256 KiB cache: read back from the log.
    assert!(report.u64("counts.backlog_bytes") >= 3000 * 1024);
    assert!(report.u64("counts.evicted_at_start") > 0);
    assert!(report.u64("counts.disk_messages_read") > 0);
    assert_eq!(report.u64("operations.catch_up.count"), 3000);
    assert!(report.num("operations.catch_up.mb_per_s") > 0.0);
    assert!(report.u64("counts.probe_rounds_alone") > 0);
    assert_latency(
        &report,
        "probe_alone",
        report.u64("counts.probe_rounds_alone"),
    );
}

#[test]
fn disk_read_times_sequential_reads_warm_and_cold() {
    let report = json(&["disk", "--read", "--messages", "256", "--size", "16KiB"]);
    let bytes = 256 * 16 * 1024;
    assert_eq!(report.u64("counts.file_bytes"), bytes);
    assert_eq!(report.u64("operations.write_fsync.bytes"), bytes);
    assert_eq!(report.u64("operations.read_page_cache.bytes"), bytes);
    match report.get("operations").get("read_cold") {
        Some(_) => {
            assert_eq!(report.u64("operations.read_cold.bytes"), bytes);
            assert_eq!(report.u64("operations.read_cold_again.bytes"), bytes);
        }
        None => assert_eq!(report.get("notes").as_array().map(Vec::len), Some(1)),
    }
}

#[test]
fn disk_times_appends_with_fdatasync() {
    let report = json(&["disk", "--messages", "20"]);
    assert_eq!(report.get("scenario"), &json!("disk"));
    assert_eq!(report.u64("parameters.size"), 4096);
    assert_eq!(report.u64("counts.synced"), 20);
    assert_eq!(report.u64("operations.append_fdatasync.bytes"), 20 * 4096);
    assert!(report.num("operations.append_fdatasync.mb_per_s") > 0.0);
    assert_latency(&report, "append_fdatasync", 20);
    // It measures the disk, not a broker.
    assert_eq!(
        bench(&["disk", "--broker", "127.0.0.1:1"]).status.code(),
        Some(2)
    );
}
