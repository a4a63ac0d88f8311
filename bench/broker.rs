//! The broker under test: one given by `--broker`, or one started inside
//! this process on 127.0.0.1 and a free port, so that `bench send` works with
//! nothing else running. And the one thing bench reads about a broker in
//! another process: its resident memory, from `/proc/PID/status`.

use crate::args::{Options, Scenario};
use courier::server::{self, Config, RunningServer};
use std::net::{Ipv4Addr, SocketAddr};

pub struct Broker {
    addr: String,
    client_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    credentials: Option<courier::client::UserToken>,
    running: Option<RunningServer>,
    /// The in-process broker's data directory, removed at stop.
    data_dir: Option<std::path::PathBuf>,
}

impl Broker {
    pub fn start(options: &Options) -> Result<Broker, String> {
        let security = &options.security;
        let client_tls = match security.tls {
            false => None,
            true => Some(
                courier::tls::client_config(security.ca.as_deref()).map_err(|e| e.to_string())?,
            ),
        };
        let credentials = security.credentials.clone();
        if let Some(addr) = &options.broker {
            return Ok(Broker {
                addr: addr.clone(),
                client_tls,
                credentials,
                running: None,
                data_dir: None,
            });
        }
        let mut config = Config {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Config::default()
        };
        if security.tls {
            let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) else {
                return Err(
                    "--tls with the in-process broker needs --tls-cert and --tls-key".into(),
                );
            };
            config.tls = Some(courier::tls::server_config(cert, key).map_err(|e| e.to_string())?);
        }
        if matches!(options.scenario, Scenario::Retained | Scenario::Replay) {
            // Retaining is the point: no backlog bound gets in the way.
            config.limits.max_backlog_bytes = usize::MAX / 2;
            config.limits.max_backlog_messages = usize::MAX / 2;
        }
        if options.scenario == Scenario::Idle {
            config.max_connections = config.max_connections.max(1_000_100);
        }
        // `replay --cache-bytes` reads the log: durable, `always` unless
        // `--fsync` says otherwise (as `backlog`).
        let sync = match options.from_disk {
            true => {
                config.limits.cache_bytes = options.cache_bytes;
                Some(options.fsync.unwrap_or(courier::storage::SyncMode::Always))
            }
            false => options.fsync,
        };
        let data_dir = sync.map(|sync| {
            let dir = std::env::temp_dir().join(format!("courier-bench-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            config.storage = durable_storage(&dir, sync);
            dir
        });
        let running = server::spawn(config)
            .map_err(|e| format!("cannot start the in-process broker: {e}"))?;
        // With --tls the certificate must name 127.0.0.1 (an IP SAN).
        Ok(Broker {
            addr: running.addr().to_string(),
            client_tls,
            credentials,
            running: Some(running),
            data_dir,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn client_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.client_tls.clone()
    }

    pub fn credentials(&self) -> Option<courier::client::UserToken> {
        self.credentials.clone()
    }

    pub fn in_process(&self) -> bool {
        self.running.is_some()
    }

    /// Where the in-process durable broker keeps its log.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Stops an in-process broker and waits for its thread.
    pub fn stop(self) -> Result<(), String> {
        let stopped = match self.running {
            Some(running) => running
                .stop()
                .map_err(|e| format!("the in-process broker failed: {e}")),
            None => Ok(()),
        };
        if let Some(dir) = self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        stopped
    }
}

/// The resident set size of process `pid`, in bytes (`VmRSS`).
/// The broker's RSS after its next housekeeping: the broker returns freed
/// memory to the system once a second, so a reading taken right after a
/// drain would still show the peak.
pub fn settled_rss_bytes(pid: u32) -> Result<u64, String> {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    rss_bytes(pid)
}

pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {path} (is --broker-pid right?): {}",
            courier::client::io_message(&e)
        )
    })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// A durable in-process broker's storage: a log in `dir`, synced per
/// `sync`, the log's other settings at their defaults.
pub fn durable_storage(dir: &std::path::Path, sync: courier::storage::SyncMode) -> server::Storage {
    server::Storage::Dir {
        path: dir.to_path_buf(),
        log: courier::storage::Config {
            sync,
            ..courier::storage::Config::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_readable() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
        assert!(rss_bytes(u32::MAX).is_err());
    }
}
