//! The client's byte stream: a TCP socket, or TLS over one (rustls's
//! `StreamOwned`, which runs the handshake inside the first read or write).
//! The plaintext case is the socket itself, so it costs nothing new. Under
//! TLS the socket is read through [`Gulps`]: rustls asks for 4 KiB at a
//! time, and a pull reply of a megabyte should not cost 256 reads.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, Gulps>>),
}

/// Bytes read from the socket in large reads, handed out in small ones.
/// Writes go straight through.
pub(super) struct Gulps {
    tcp: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const GULP_BYTES: usize = 64 * 1024;

impl Read for Gulps {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            if self.buf.is_empty() {
                self.buf = vec![0; GULP_BYTES];
            }
            self.start = 0;
            self.end = self.tcp.read(&mut self.buf)?;
        }
        let available = self.buf.get(self.start..self.end).unwrap_or_default();
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.start += n;
        Ok(n)
    }
}

impl Write for Gulps {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Stream {
    /// TLS over `tcp`, verifying the broker's certificate for `host`.
    pub(super) fn tls(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> io::Result<Self> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let gulps = Gulps {
            tcp,
            buf: Vec::new(),
            start: 0,
            end: 0,
        };
        Ok(Stream::Tls(Box::new(StreamOwned::new(session, gulps))))
    }

    /// The socket underneath, for timeouts and shutdown.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.get_ref().tcp,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(buf),
            // rustls buffers what it encrypts: flush sends every record.
            Stream::Tls(tls) => {
                tls.write_all(buf)?;
                tls.flush()
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// The host part of an address as written (`host:port`, `[v6]:port`), for
/// checking the broker's certificate.
pub(super) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_the_address_without_its_port() {
        assert_eq!(host_of("localhost:5555"), "localhost");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7"), "::1");
        assert_eq!(host_of("broker"), "broker");
    }
}
