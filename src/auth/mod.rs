//! Users, tokens and permissions: who may connect, and what each user may
//! do on which topics.
//!
//! The broker keeps a [`Users`] table loaded from a plain-text file (see
//! [`file`] for its format) and consults it twice: at HELLO, to check the
//! credentials ([`Users::authenticate`]), and before every request, through
//! the one permission table [`rule`] keyed by operation, so that a new
//! operation is one line there. Tokens are never stored: the file keeps
//! their SHA-256, and a check hashes the presented token and compares the
//! hashes in constant time (`subtle`). An unknown user is compared against a
//! fixed hash all the same, so the time taken does not tell whether a name
//! exists.
//!
//! Split by job: this file (users, grants, patterns, the permission rule),
//! `file` (reading and writing the users file), `token` (making and hashing
//! tokens).

pub mod file;
pub mod token;

pub use file::{UsersFileError, load, save};
pub use token::{TOKEN_PREFIX, hash_token, new_token};

use crate::protocol::Op;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Longest user name, in bytes.
pub const MAX_USER_NAME_BYTES: usize = 64;

/// What a grant allows (see [`rule`] for which operations need which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantKind {
    /// PUBLISH, PUBLISH_BATCH.
    Publish,
    /// SUBSCRIBE, PULL, ACK (and SEEK, FETCH).
    Subscribe,
    /// CREATE_TOPIC, DELETE_TOPIC; any admin grant also allows STATS.
    Admin,
}

impl GrantKind {
    pub fn name(self) -> &'static str {
        match self {
            GrantKind::Publish => "publish",
            GrantKind::Subscribe => "subscribe",
            GrantKind::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "publish" => GrantKind::Publish,
            "subscribe" => GrantKind::Subscribe,
            "admin" => GrantKind::Admin,
            _ => return None,
        })
    }
}

/// Topic names a grant covers: one name exactly, or every name that starts
/// with a prefix (written with a trailing `*`; `*` alone is every topic).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

/// Why a pattern is refused: it must be a topic name, or a topic name's
/// start followed by one `*` (names are `[A-Za-z0-9._-]`, 1 to 255 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pattern is a topic name, or the start of one followed by a single '*'")
    }
}

impl std::error::Error for BadPattern {}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, BadPattern> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let chars_ok = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let len_ok =
            body.len() <= crate::protocol::MAX_TOPIC_NAME_BYTES && (prefix || !body.is_empty());
        if !chars_ok || !len_ok {
            return Err(BadPattern);
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == topic,
            Pattern::Prefix(start) => topic.starts_with(start.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Prefix(start) => write!(f, "{start}*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub kind: GrantKind,
    pub pattern: Pattern,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.pattern)
    }
}

/// One user: a name, the SHA-256 of its token, and its grants.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub token_hash: [u8; 32],
    pub grants: Vec<Grant>,
}

/// Leaves the hash out: it is as good as a token to an offline guesser.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether a grant of `kind` covers `topic` — or, with `None`, whether
    /// the user has a grant of `kind` at all.
    pub fn may(&self, kind: GrantKind, topic: Option<&str>) -> bool {
        self.grants
            .iter()
            .any(|g| g.kind == kind && topic.is_none_or(|t| g.pattern.matches(t)))
    }

    /// Whether any grant covers `topic` (what LIST_TOPICS and TOPIC_INFO
    /// show).
    pub fn sees(&self, topic: &str) -> bool {
        self.grants.iter().any(|g| g.pattern.matches(topic))
    }
}

/// Why a user name is refused: 1 to [`MAX_USER_NAME_BYTES`] bytes of
/// `[A-Za-z0-9._-]`.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The users the broker knows, by name. Users are shared (`Arc`) with the
/// connections they authenticated, so a reload swaps the table without
/// touching a connection until the broker re-checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, Arc<User>>,
}

/// The hash an unknown user's token is compared against, so that a wrong
/// name costs the same time as a wrong token.
const NO_USER_HASH: [u8; 32] = [0; 32];

impl Users {
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// Adds or replaces a user.
    pub fn insert(&mut self, user: User) {
        self.by_name.insert(user.name.clone(), Arc::new(user));
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<User>> {
        self.by_name.remove(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user these credentials name, if the token is theirs. Hashes and
    /// compares in constant time whether or not the user exists.
    pub fn authenticate(&self, user: &str, token: &str) -> Option<&Arc<User>> {
        let presented = hash_token(token);
        let found = self.by_name.get(user);
        let expected = found.map_or(&NO_USER_HASH, |u| &u.token_hash);
        let equal: bool = presented.ct_eq(expected).into();
        found.filter(|_| equal)
    }

    /// Whether `current` (a connection's user, as authenticated) is still
    /// in this table with the same token: a reload that removed the user
    /// or replaced its token ends its connections.
    pub fn still_valid(&self, current: &User) -> Option<&Arc<User>> {
        self.by_name.get(&current.name).filter(|u| {
            let same: bool = u.token_hash.ct_eq(&current.token_hash).into();
            same
        })
    }
}

/// What an operation needs. [`Rule::OnTopic`] is checked against the
/// request's topic; a request of such an operation without one (a PULL of
/// every subscribed topic) needs the grant on some pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Any authenticated user (HELLO, registering, leaving a topic or a
    /// session, which only give up what the user had).
    Open,
    /// A grant of this kind covering the request's topic.
    OnTopic(GrantKind),
    /// A grant of this kind on any pattern (STATS: broker-wide counters).
    Anywhere(GrantKind),
    /// Any grant covering the topic (TOPIC_INFO); LIST_TOPICS is open and
    /// filtered to such topics.
    Sees,
}

/// The permission table: what each operation needs. The one place to
/// change when an operation is added.
pub fn rule(op: Op) -> Rule {
    match op {
        Op::Hello
        | Op::RegisterPublisher
        | Op::RegisterSubscriber
        | Op::Unsubscribe
        | Op::EndSession
        | Op::ListTopics => Rule::Open,
        Op::CreateTopic | Op::DeleteTopic => Rule::OnTopic(GrantKind::Admin),
        Op::Publish | Op::PublishBatch => Rule::OnTopic(GrantKind::Publish),
        Op::Subscribe | Op::Pull | Op::Ack | Op::Seek | Op::Fetch => {
            Rule::OnTopic(GrantKind::Subscribe)
        }
        Op::Stats => Rule::Anywhere(GrantKind::Admin),
        Op::TopicInfo => Rule::Sees,
    }
}

/// Whether `user` may do `op` on `topic` (the request's topic, if it has
/// one).
pub fn permits(user: &User, op: Op, topic: Option<&str>) -> bool {
    match rule(op) {
        Rule::Open => true,
        Rule::OnTopic(kind) => user.may(kind, topic),
        Rule::Anywhere(kind) => user.may(kind, None),
        Rule::Sees => topic.is_none_or(|t| user.sees(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[(GrantKind, &str)]) -> User {
        User {
            name: "u".into(),
            token_hash: hash_token("t"),
            grants: grants
                .iter()
                .map(|&(kind, p)| Grant {
                    kind,
                    pattern: Pattern::parse(p).expect("pattern"),
                })
                .collect(),
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let exact = Pattern::parse("orders").expect("exact");
        assert!(exact.matches("orders") && !exact.matches("orders2"));
        let prefix = Pattern::parse("orders.*").expect("prefix");
        assert!(prefix.matches("orders.eu") && !prefix.matches("orders"));
        assert!(Pattern::parse("*").expect("all").matches("x"));
        for bad in ["", "a*b", "a**", "a b", "*a"] {
            assert_eq!(Pattern::parse(bad), Err(BadPattern), "{bad}");
        }
    }

    #[test]
    fn each_grant_allows_its_operations_on_its_topics_only() {
        let u = user(&[(GrantKind::Publish, "p.*"), (GrantKind::Subscribe, "s")]);
        assert!(permits(&u, Op::Publish, Some("p.1")));
        assert!(permits(&u, Op::PublishBatch, Some("p.1")));
        assert!(!permits(&u, Op::Publish, Some("s")));
        assert!(permits(&u, Op::Subscribe, Some("s")));
        assert!(!permits(&u, Op::Subscribe, Some("p.1")));
        assert!(permits(&u, Op::Pull, None));
        assert!(!permits(&u, Op::CreateTopic, Some("p.1")));
        assert!(!permits(&u, Op::Stats, None));
        assert!(permits(&u, Op::TopicInfo, Some("s")));
        assert!(!permits(&u, Op::TopicInfo, Some("q")));
    }

    #[test]
    fn authentication_needs_the_right_token_for_the_right_user() {
        let mut users = Users::default();
        users.insert(user(&[]));
        assert!(users.authenticate("u", "t").is_some());
        assert!(users.authenticate("u", "x").is_none());
        assert!(users.authenticate("v", "t").is_none());
    }
}
