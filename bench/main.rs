//! `bench`: the project's measuring instrument.
//!
//! Each scenario drives a broker through the client library with one thread
//! and one blocking connection per client, measures throughput and latency
//! (HdrHistogram, nanoseconds), and checks that what it measured really
//! happened: every acknowledged message reached every subscriber of its
//! topic, once, in order. A run that fails its check exits with status 1
//! even though it printed figures.
//!
//! # Layout
//!
//! - `args`, `help`: the command line and its texts.
//! - `broker`: the broker under test (given, or started in this process) and
//!   reading a broker's RSS.
//! - `run`: what a run's threads share — clock, abort flag, start gate,
//!   timeline, progress meters — and starting and joining them.
//! - `payload`: the header every message carries (publisher, sequence,
//!   send time) and the reusable frame of payloads.
//! - `layout`: which client publishes or subscribes to which topic.
//! - `publisher`, `subscriber`: the two client loops.
//! - `verify`: setting what subscribers saw against what publishers issued.
//! - `topics`: the run's topics and the admin connection.
//! - `stream` (send, fanout, latency), `create_topic`, `idle`, `retained`,
//!   `fairness`, `recovery`, `disk`, `replay`, `backlog`: the scenarios, each
//!   ending in a
//!   `Report`.
//! - `relay`: `latency --relay`, the same schedule through a bare TCP relay,
//!   for the machine's ceiling.
//! - `report`, `hgrm`, `progress`: output (JSON through serde_json).

mod args;
mod backlog;
mod broker;
mod create_topic;
mod disk;
mod fairness;
mod help;
mod hgrm;
mod idle;
mod layout;
mod payload;
mod progress;
mod publisher;
mod recovery;
mod relay;
mod replay;
mod report;
mod retained;
mod run;
mod stream;
mod subscriber;
mod topics;
mod verify;

use args::{Options, Parsed, Scenario};
use broker::Broker;
use report::Report;
use run::Failure;
use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match args::parse(std::env::args_os().skip(1).collect()) {
        Ok(Parsed::Run(options)) => *options,
        Ok(Parsed::Help(text)) => return print(text.trim_end()),
        Ok(Parsed::Version) => return print(&format!("bench {}", env!("CARGO_PKG_VERSION"))),
        Err(e) => {
            eprintln!("{}", e.text());
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => finish(&options, &report),
        Err(Failure::Usage(message)) => {
            let usage = args::UsageError {
                message,
                scenario: Some(options.scenario),
            };
            eprintln!("{}", usage.text());
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("bench: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(options: &Options) -> Result<Report, Failure> {
    if options.relay {
        return relay::run(options);
    }
    let broker = Broker::start(options)?;
    let report = match options.scenario {
        Scenario::Send | Scenario::Fanout | Scenario::Latency => stream::run(options, &broker),
        Scenario::CreateTopic => create_topic::run(options, &broker),
        Scenario::Idle => idle::run(options, &broker),
        Scenario::Retained => retained::run(options, &broker),
        Scenario::Fairness => fairness::run(options, &broker),
        // Starts and restarts brokers of its own; the one above idles.
        Scenario::Recovery => recovery::run(options),
        Scenario::Disk => disk::run(options),
        Scenario::Replay => replay::run(options, &broker),
        Scenario::Backlog => backlog::run(options),
    };
    let stopped = broker.stop();
    let report = report?;
    stopped?;
    Ok(report)
}

/// Prints the report, writes the histograms; the exit status says whether
/// the run verified.
fn finish(options: &Options, report: &Report) -> ExitCode {
    let mut text = if options.json {
        report.json()
    } else {
        report.human()
    };
    if let Some(path) = &options.hgrm {
        match report.write_hgrm(path) {
            Ok(written) if !options.json => {
                for (file, op) in written {
                    text.push_str(&format!(
                        "histogram of {op} written to {}\n",
                        file.display()
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("bench: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut out = io::stdout().lock();
    let printed = writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush());
    if printed.is_err() || !report.verified() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
