//! The users file: plain text, one user per line, written by `courier user`
//! and read by `broker --users` (at start and on SIGHUP).
//!
//! ```text
//! # courier users file
//! NAME SHA256-OF-TOKEN-IN-HEX [GRANT ...]
//! alice 3f1c…(64 hex digits) publish:orders.* subscribe:orders.eu admin:scratch.*
//! ```
//!
//! Fields are separated by spaces or tabs. A grant is `publish:PATTERN`,
//! `subscribe:PATTERN` or `admin:PATTERN`; a pattern is a topic name or a
//! start followed by `*`. Blank lines and lines starting with `#` are
//! ignored. A malformed line makes the whole file refused (the broker does
//! not start, or a reload keeps the table it had), and the error names the
//! line: half a permission table is worse than the old one.

use super::{Grant, GrantKind, Pattern, User, Users, valid_user_name};
use std::fmt;
use std::io;
use std::path::Path;

/// Why a users file could not be read.
#[derive(Debug)]
pub enum UsersFileError {
    Io(io::Error),
    /// Line `line` (from 1) is not `NAME HASH [GRANT ...]`.
    Line {
        line: usize,
        problem: LineProblem,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineProblem {
    BadName,
    MissingHash,
    BadHash,
    BadGrant,
    DuplicateUser,
}

impl fmt::Display for UsersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersFileError::Io(e) => write!(f, "{e}"),
            UsersFileError::Line { line, problem } => {
                let what = match problem {
                    LineProblem::BadName => "a user name is 1 to 64 characters of [A-Za-z0-9._-]",
                    LineProblem::MissingHash => "expected NAME HASH [GRANT ...]",
                    LineProblem::BadHash => "the token hash must be 64 hex digits",
                    LineProblem::BadGrant => {
                        "a grant is publish:PATTERN, subscribe:PATTERN or admin:PATTERN"
                    }
                    LineProblem::DuplicateUser => "this user is already listed above",
                };
                write!(f, "line {line}: {what}")
            }
        }
    }
}

impl std::error::Error for UsersFileError {}

/// Reads a users file. A missing file is an error: `--users` names a file
/// that `courier user add` creates.
pub fn load(path: &Path) -> Result<Users, UsersFileError> {
    let text = std::fs::read_to_string(path).map_err(UsersFileError::Io)?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Users, UsersFileError> {
    let mut users = Users::default();
    for (index, line) in text.lines().enumerate() {
        let fail = |problem| UsersFileError::Line {
            line: index + 1,
            problem,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default();
        if !valid_user_name(name) {
            return Err(fail(LineProblem::BadName));
        }
        let hash = fields.next().ok_or(fail(LineProblem::MissingHash))?;
        let token_hash = parse_hex(hash).ok_or(fail(LineProblem::BadHash))?;
        let grants = fields
            .map(parse_grant)
            .collect::<Option<Vec<_>>>()
            .ok_or(fail(LineProblem::BadGrant))?;
        if users.get(name).is_some() {
            return Err(fail(LineProblem::DuplicateUser));
        }
        users.insert(User {
            name: name.to_owned(),
            token_hash,
            grants,
        });
    }
    Ok(users)
}

pub fn parse_grant(text: &str) -> Option<Grant> {
    let (kind, pattern) = text.split_once(':')?;
    Some(Grant {
        kind: GrantKind::from_name(kind)?,
        pattern: Pattern::parse(pattern).ok()?,
    })
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The file's text for `users`.
pub fn render(users: &Users) -> String {
    let mut text = String::from(
        "# courier users file: NAME SHA256-OF-TOKEN [publish:P|subscribe:P|admin:P ...]\n\
         # written by `courier user`; the broker rereads it on SIGHUP.\n",
    );
    for user in users.iter() {
        text.push_str(&user.name);
        text.push(' ');
        for b in user.token_hash {
            text.push_str(&format!("{b:02x}"));
        }
        for grant in &user.grants {
            text.push_str(&format!(" {grant}"));
        }
        text.push('\n');
    }
    text
}

/// Writes the file whole and atomically (a temporary file renamed over it),
/// readable by its owner only, so a broker reloading at that moment reads
/// the old file or the new one, never half of one.
pub fn save(path: &Path, users: &Users) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(render(users).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_token;

    #[test]
    fn a_file_reads_back_what_was_written() {
        let mut users = Users::default();
        users.insert(User {
            name: "alice".into(),
            token_hash: hash_token("x"),
            grants: vec![
                parse_grant("publish:a.*").expect("g"),
                parse_grant("admin:b").expect("g"),
            ],
        });
        users.insert(User {
            name: "bob".into(),
            token_hash: hash_token("y"),
            grants: vec![],
        });
        assert_eq!(parse(&render(&users)).expect("parse"), users);
    }

    #[test]
    fn a_bad_line_is_named() {
        let cases = [
            ("bad/name 00", LineProblem::BadName),
            ("alice", LineProblem::MissingHash),
            ("alice 12", LineProblem::BadHash),
            (
                &*format!("alice {} read:x", "0".repeat(64)),
                LineProblem::BadGrant,
            ),
        ];
        for (text, problem) in cases {
            let text = format!("# ok\n\n{text}\n");
            match parse(&text) {
                Err(UsersFileError::Line {
                    line: 3,
                    problem: p,
                }) => assert_eq!(p, problem),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
