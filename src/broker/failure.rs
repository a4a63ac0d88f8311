//! Why a request is refused: an [`ErrorCode`] to match on and a message for
//! people.
//!
//! Code paths decide on the code alone; the message only travels to the
//! client. Most messages are fixed, so they are `&'static str` and cost no
//! allocation; those that name what the client sent (a topic, an offset, a
//! limit) are built once, when the refusal is certain. Refusals that several
//! requests share have one constructor each, so they read the same wherever
//! they come from.

use crate::budget::Budget;
use crate::protocol::{ErrorCode, MAX_TOPIC_NAME_BYTES};
use std::borrow::Cow;

#[derive(Debug)]
pub(super) struct Failure {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn not_publisher() -> Self {
        Failure::new(
            ErrorCode::NotRegistered,
            "register a publisher on this connection first (REGISTER_PUBLISHER)",
        )
    }

    pub fn not_subscriber() -> Self {
        Failure::new(
            ErrorCode::NotRegistered,
            "register a subscriber on this connection first (REGISTER_SUBSCRIBER)",
        )
    }

    /// The memory budget has no room for what the request would add.
    pub fn broker_full(budget: &Budget) -> Self {
        Failure::new(
            ErrorCode::BrokerFull,
            format!(
                "the broker holds {} of its {} bytes of memory (--max-memory, {} kept for replies); retry after subscribers catch up",
                budget.total(),
                budget.limit(),
                budget.reserve()
            ),
        )
    }

    /// Echoes at most the start of the name: an error reply must stay small
    /// whatever the client sent.
    pub fn invalid_topic_name(name: &str) -> Self {
        let shown: String = name.escape_debug().take(64).collect();
        let cut = if shown.len() < name.escape_debug().count() {
            "…"
        } else {
            ""
        };
        Failure::new(
            ErrorCode::InvalidTopicName,
            format!(
                "invalid topic name \"{shown}{cut}\": use 1 to {MAX_TOPIC_NAME_BYTES} bytes of A-Z a-z 0-9 . _ -"
            ),
        )
    }

    /// `name` is valid (checked first), so it is short and printable.
    pub fn storage_unavailable() -> Self {
        Failure::new(
            ErrorCode::StorageUnavailable,
            "the broker's log could not write or sync this request, so nothing of it is kept; retry",
        )
    }

    pub fn unknown_topic(name: &str) -> Self {
        Failure::new(ErrorCode::UnknownTopic, format!("unknown topic '{name}'"))
    }

    pub fn not_subscribed(name: &str) -> Self {
        Failure::new(
            ErrorCode::NotSubscribed,
            format!("not subscribed to '{name}'"),
        )
    }
}

pub(super) fn fail<T>(
    code: ErrorCode,
    message: impl Into<Cow<'static, str>>,
) -> Result<T, Failure> {
    Err(Failure::new(code, message))
}
