//! The run's own topics, and the admin connection that creates them, reads
//! STATS, and deletes them at the end.
//!
//! Names carry the process id and start time, so runs against a shared
//! broker never collide with each other or with anyone's real topics.
//! Deleting drops whatever a topic still retains; if a run fails midway the
//! topics are still deleted (on drop), so an external broker is left as it
//! was found.

use crate::args::Options;
use crate::run::Shared;
use courier::client::{Client, ServerInfo, Stats};
use std::time::{SystemTime, UNIX_EPOCH};

/// A prefix no other run uses: `bench-PID-MILLIS`.
pub fn run_prefix() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    format!("bench-{}-{millis}", std::process::id())
}

pub struct Topics {
    admin: Client,
    pub names: Vec<String>,
    created: usize,
}

impl Topics {
    /// Connects, registers as a publisher and creates `count` topics.
    pub fn create(shared: &Shared, count: usize) -> Result<Topics, String> {
        let mut admin = shared.connect("bench-admin".to_owned())?;
        admin
            .register_publisher()
            .map_err(|e| format!("cannot register: {e}"))?;
        let prefix = run_prefix();
        let mut topics = Topics {
            admin,
            names: (0..count).map(|t| format!("{prefix}-{t}")).collect(),
            created: 0,
        };
        for name in &topics.names {
            topics
                .admin
                .create_topic(name)
                .map_err(|e| format!("cannot create topic {name}: {e}"))?;
            topics.created += 1;
        }
        Ok(topics)
    }

    pub fn info(&self) -> &ServerInfo {
        self.admin.server_info()
    }

    pub fn stats(&mut self) -> Result<Stats, String> {
        self.admin.stats().map_err(|e| format!("STATS failed: {e}"))
    }

    /// Deletes the topics created; the first failure is reported.
    pub fn delete(&mut self) -> Result<(), String> {
        let mut first_error = None;
        for name in self.names.iter().take(self.created) {
            if let Err(e) = self.admin.delete_topic(name) {
                first_error.get_or_insert(format!("cannot delete topic {name}: {e}"));
            }
        }
        self.created = 0;
        first_error.map_or(Ok(()), Err)
    }

    /// Checks that messages of `size` bytes in frames of `batch` fit the
    /// broker's limits; the error is about the arguments.
    pub fn check_fit(&self, options: &Options) -> Result<(), String> {
        let info = self.info();
        let size = options.size as u64;
        if size > info.max_payload_bytes {
            return Err(format!(
                "--size {size} is over the broker's payload limit of {} bytes",
                info.max_payload_bytes
            ));
        }
        // The request around the payloads: array, op, id, topic name, and
        // up to 5 bytes of header per payload.
        let name = self.names.first().map_or(0, |n| n.len()) as u64;
        let overhead = 32 + name;
        let frame = overhead + options.batch as u64 * (size + 5);
        if frame > info.max_frame_bytes {
            let fits = info.max_frame_bytes.saturating_sub(overhead) / (size + 5);
            return Err(format!(
                "--batch {} of {size}-byte messages makes frames of about {frame} bytes, over the broker's limit of {}; use --batch {} or less",
                options.batch,
                info.max_frame_bytes,
                fits.max(1)
            ));
        }
        Ok(())
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}
