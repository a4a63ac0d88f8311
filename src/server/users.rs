//! The loop's side of `--users`: rereading the file on SIGHUP, and logging
//! the broker's refused authentications with what only the loop knows, the
//! peer's address. Kept apart from `event_loop` so that the loop proper
//! only calls in.

use super::event_loop::EventLoop;
use crate::log_limited;
use log::Level;
use std::time::Instant;

impl EventLoop {
    /// SIGHUP: reads the users file again. A file that does not read or
    /// parse leaves the table as it was (logged); connections stay.
    pub(super) fn reload_users(&mut self) {
        let Some(path) = self.config.users.clone() else {
            log::info!("SIGHUP ignored: the broker has no --users file to reload");
            return;
        };
        match crate::auth::load(&path) {
            Ok(users) => {
                log::info!(
                    "users file {} reloaded: {} users",
                    path.display(),
                    users.len()
                );
                let (mut outbox, broker) = self.outbox();
                broker.set_users(Some(users), &mut outbox);
                self.log_auth_failures(Instant::now());
            }
            Err(e) => log::error!(
                "users file {} not reloaded, keeping the users loaded before: {e}",
                path.display()
            ),
        }
    }

    /// Logs the broker's refused authentications, rate-limited, with the
    /// peer's address and the user name given (never the token).
    pub(super) fn log_auth_failures(&mut self, now: Instant) {
        for failure in self.broker.take_auth_failures() {
            let user = failure
                .user
                .as_deref()
                .map(|u| u.escape_debug().to_string());
            log_limited!(
                self.bad_input_log,
                now,
                Level::Warn,
                "{}: authentication refused ({}), user {}",
                self.label(failure.conn),
                failure.reason,
                user.as_deref().unwrap_or("<none>")
            );
        }
    }
}
