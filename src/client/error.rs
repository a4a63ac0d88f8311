//! The client's error type: one enum a caller can match.
//!
//! The variants follow what can go wrong, in the order it can: the address
//! cannot be reached (`Connect`), the broker answers with an error code
//! (`Server`, see PROTOCOL.md section 5), the socket fails (`Io`, `Timeout`,
//! `ConnectionClosed`), or the broker says something the protocol does not
//! allow (`Protocol`). `FrameTooLarge` is caught before anything is sent.
//!
//! Callers act on [`Error::code`] and [`Error::is_retryable`], never on the
//! text. [`Error::is_fatal`] tells whether the client can still be used: only
//! an error reply that leaves the connection open, or a request refused before
//! it was sent, keeps it usable.
//!
//! `Error` is `Clone` (rebuilding the `io::Error` from its kind, OS code and
//! text) because one broken connection is the outcome of every request that
//! was in flight on it, and a pipeline reports that outcome for each of them.

use crate::protocol::ErrorCode;
use std::fmt;
use std::io;

/// What a client call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client call failed.
#[derive(Debug)]
pub enum Error {
    /// The address could not be resolved or the TCP connection not opened.
    Connect { addr: String, source: io::Error },
    /// The broker answered with an error reply.
    Server { code: ErrorCode, message: String },
    /// Reading from or writing to the socket failed.
    Io(io::Error),
    /// The broker did not answer within the configured timeout. The
    /// connection is closed: a late reply could no longer be matched safely.
    Timeout,
    /// The broker closed the connection (or an earlier error closed it).
    ConnectionClosed,
    /// The broker sent something the protocol does not allow.
    Protocol(String),
    /// The request would be a frame larger than the broker accepts; it was
    /// not sent and the connection is still usable.
    FrameTooLarge { len: usize, max: usize },
}

impl Error {
    /// The broker's error code, for an error reply.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True if the same request may succeed later unchanged (for example
    /// `TOPIC_FULL` once subscribers catch up).
    pub fn is_retryable(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_retryable)
    }

    /// True if the connection is unusable after this error: every later call
    /// on the same client returns [`Error::ConnectionClosed`].
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Server { code, .. } => code.closes_connection(),
            Error::FrameTooLarge { .. } => false,
            _ => true,
        }
    }

    /// Sorts a socket error: timeouts and a peer that went away get their
    /// own variants, because callers handle them differently from a failure.
    pub(crate) fn from_io(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => Error::ConnectionClosed,
            _ => Error::Io(e),
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Error {
        match self {
            Error::Connect { addr, source } => Error::Connect {
                addr: addr.clone(),
                source: clone_io(source),
            },
            Error::Server { code, message } => Error::Server {
                code: *code,
                message: message.clone(),
            },
            Error::Io(e) => Error::Io(clone_io(e)),
            Error::Timeout => Error::Timeout,
            Error::ConnectionClosed => Error::ConnectionClosed,
            Error::Protocol(message) => Error::Protocol(message.clone()),
            Error::FrameTooLarge { len, max } => Error::FrameTooLarge {
                len: *len,
                max: *max,
            },
        }
    }
}

fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The OS's text for an I/O error without Rust's " (os error N)" suffix,
/// which means nothing to the person reading the message.
pub fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if e.raw_os_error().is_some() => text[..cut].to_owned(),
        _ => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { addr, source } => {
                write!(
                    f,
                    "cannot connect to broker at {addr}: {}",
                    io_message(source)
                )
            }
            Error::Server { code, message } if message.is_empty() => {
                write!(f, "the broker refused the request ({code})")
            }
            Error::Server { code, message } => write!(f, "{message} ({code})"),
            Error::Io(e) => write!(f, "connection to the broker failed: {}", io_message(e)),
            Error::Timeout => f.write_str("timed out waiting for the broker"),
            Error::ConnectionClosed => f.write_str("the connection to the broker is closed"),
            Error::Protocol(message) => write!(f, "protocol violation by the broker: {message}"),
            Error::FrameTooLarge { len, max } => write!(
                f,
                "request of {len} bytes is over the broker's limit of {max} bytes"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<crate::codec::ReplyDecodeError> for Error {
    fn from(e: crate::codec::ReplyDecodeError) -> Error {
        Error::Protocol(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_suffix_is_dropped() {
        let e = io::Error::from_raw_os_error(111);
        assert!(!io_message(&e).contains("os error"), "{}", io_message(&e));
        let custom = io::Error::other("plain (os error 5) text");
        assert_eq!(io_message(&custom), "plain (os error 5) text");
    }

    #[test]
    fn only_connection_keeping_replies_are_not_fatal() {
        let full = Error::Server {
            code: ErrorCode::TopicFull,
            message: String::new(),
        };
        assert!(!full.is_fatal() && full.is_retryable());
        let stopping = Error::Server {
            code: ErrorCode::ShuttingDown,
            message: String::new(),
        };
        assert!(stopping.is_fatal());
        assert!(Error::Timeout.is_fatal() && !Error::Timeout.is_retryable());
    }

    #[test]
    fn clones_keep_the_os_error() {
        let e = Error::Io(io::Error::from_raw_os_error(104));
        match e.clone() {
            Error::Io(copy) => assert_eq!(copy.raw_os_error(), Some(104)),
            other => panic!("{other:?}"),
        }
    }
}
