//! Looking at the broker from outside, and ending a session on request:
//! LIST_TOPICS, TOPIC_INFO and END_SESSION.
//!
//! A listing walks the name index (a `BTreeMap`, so names come sorted) from
//! just after the client's `after`, and stops at the page's limit or where
//! the reply would outgrow a frame, whichever comes first. Its work is
//! bounded by the page, not by the number of topics: the range starts by a
//! tree search, and each entry costs the same whatever else the broker
//! holds.
//!
//! END_SESSION is the expiry of [`Broker::expire`] done now instead of after
//! `session_timeout`, so a session ended on purpose and one left to time out
//! release their topics the same way.

use super::Broker;
use super::failure::Failure;
use super::keys::{ConnId, TopicKey};
use super::{Outbox, topic::Topic};
use crate::codec::topic_summary_bound;
use crate::protocol::{
    MAX_LIST_TOPICS, PAYLOAD_OVERHEAD_BYTES, Retention, TopicPage, TopicSummary,
};
use std::ops::Bound;

impl Broker {
    /// One page of topics in name order, starting after `after`.
    /// A page of the topics `visible` admits (every one without `--users`;
    /// those the user has a grant on with it).
    pub(super) fn list_topics(
        &self,
        after: Option<&str>,
        limit: u32,
        visible: impl Fn(&str) -> bool,
    ) -> TopicPage {
        let limit = limit.clamp(1, MAX_LIST_TOPICS) as usize;
        // What the frame holds beside the entries: the reply's header and a
        // `next` of the longest name (see `codec::topic_summary_bound`).
        let room = self
            .limits
            .max_frame_bytes
            .saturating_sub(PAYLOAD_OVERHEAD_BYTES);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut entries = self.topic_names.range::<str, _>((start, Bound::Unbounded));
        let mut page = TopicPage::default();
        let mut used = 0;
        for (name, &key) in entries.by_ref() {
            if !visible(name) {
                continue;
            }
            used += topic_summary_bound(name);
            // The first entry always goes in: a frame of the smallest
            // allowed size still holds one (1024 - 512 > 354 bytes).
            if !page.topics.is_empty() && used > room {
                page.next = page.topics.last().map(|t| t.name.clone());
                return page;
            }
            page.topics.extend(self.summary(key));
            if page.topics.len() == limit {
                break;
            }
        }
        if entries.next().is_some() {
            page.next = page.topics.last().map(|t| t.name.clone());
        }
        page
    }

    pub(super) fn topic_info(&self, name: &str) -> Result<TopicSummary, Failure> {
        let key = self.topic_key(name)?;
        self.summary(key)
            .ok_or_else(|| Failure::unknown_topic(name))
    }

    fn summary(&self, key: TopicKey) -> Option<TopicSummary> {
        self.topics.get(key).map(summarize)
    }

    /// Ends the session `conn` holds: its parked pulls are answered empty,
    /// then the session goes as if it had expired. The connection may
    /// register a subscriber again afterwards.
    pub(super) fn end_session(
        &mut self,
        conn: ConnId,
        out: &mut dyn Outbox,
    ) -> Result<(), Failure> {
        let key = self.subscriber(conn)?;
        self.end_all_parked(key, super::pull::Answer::Empty, out);
        if let Some(client) = self.client_mut(conn) {
            client.subscriber = None;
        }
        let seq = self.expire(key, crate::storage::SessionEnd::Closed, true);
        self.gate_on(seq, super::journal::Undo::Kept);
        Ok(())
    }
}

fn summarize(topic: &Topic) -> TopicSummary {
    let retained = match topic.retention {
        Retention::UntilAcked => None,
        Retention::Keep {
            retain_ms,
            retain_bytes,
        } => Some((retain_ms, retain_bytes)),
    };
    TopicSummary {
        name: topic.name.to_string(),
        next_offset: topic.next_offset(),
        backlog_messages: topic.backlog_messages() as u64,
        backlog_bytes: topic.backlog_bytes() as u64,
        subscribers: topic.subscribers.len() as u64,
        retain_ms: retained.map(|(ms, _)| ms),
        retain_bytes: retained.map(|(_, bytes)| bytes),
        earliest_offset: retained.map(|_| topic.base_offset().min(topic.next_offset())),
    }
}
