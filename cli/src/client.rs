//! The API client `vswitchctl` uses: HTTP/1.1 over the Unix socket, one request per connection.
//! Small on purpose (the daemon is the only server it talks to), but it follows HTTP: status
//! line, headers, and bodies delimited by Content-Length, chunked encoding, or end of stream.
//!
//! Every request is bounded by the client's timeout, from connecting to the last byte of the
//! answer, so a daemon that is stuck (or a socket nobody answers on) makes a one-line error, not
//! a hang; a stream (capture) is bounded only until its head arrives.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use switch::model::ErrorBody;

use crate::RESTORING_HEADER;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not reachable.
    #[error("cannot connect to vswitchd at {path}: {source} (is vswitchd running? set --socket or VSWITCH_SOCKET)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The daemon refused the request; its one-line message.
    #[error("{0}")]
    Api(String),
    /// Talking to the daemon failed midway.
    #[error("talking to vswitchd failed: {0}")]
    Io(#[from] io::Error),
    /// The daemon answered something this client does not understand.
    #[error("unexpected answer from vswitchd: {0}")]
    Protocol(String),
    /// The daemon did not answer within the client's timeout.
    #[error(
        "vswitchd at {path} did not answer within {} s (vswitchctl --timeout SECONDS; 0 waits \
         for ever)", timeout.as_secs_f64()
    )]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
    },
}

/// A connection target.
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
    /// The restore progress the last answer reported ([`RESTORING_HEADER`]), if it did.
    restoring: RefCell<Option<String>>,
}

struct Head {
    status: u16,
    chunked: bool,
    length: Option<usize>,
    restoring: Option<String>,
}

impl Client {
    /// A client for the daemon at `socket`, waiting for ever.
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout: None,
            restoring: RefCell::new(None),
        }
    }

    /// The same client, with each request bounded by `timeout` (`None`: no bound).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    /// `DONE/TOTAL` when the last answer said the daemon is still restoring its saved state (so
    /// what it listed may be incomplete).
    pub fn restoring(&self) -> Option<String> {
        self.restoring.borrow().clone()
    }

    /// An I/O error as the caller sees it: the deadline passing is a [`ClientError::Timeout`].
    fn io_error(&self, e: io::Error) -> ClientError {
        match (e.kind(), self.timeout) {
            (io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock, Some(timeout)) => {
                ClientError::Timeout {
                    path: self.socket.clone(),
                    timeout,
                }
            }
            _ => ClientError::Io(e),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Head, BufReader<Timed>), ClientError> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let s = self.connect(deadline)?;
        let mut s = Timed { s, deadline };
        let body = body.unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(|e| self.io_error(e))?;
        s.write_all(body).map_err(|e| self.io_error(e))?;
        let mut r = BufReader::new(s);
        let head = read_head(&mut r).map_err(|e| match e {
            ClientError::Io(e) => self.io_error(e),
            e => e,
        })?;
        self.restoring.replace(head.restoring.clone());
        Ok((head, r))
    }

    /// Connect within the deadline. A Unix socket's `connect` blocks while the daemon's backlog
    /// is full and takes no timeout of its own, so with a deadline it runs on a helper thread
    /// that is left behind if the deadline passes (the command ends right after).
    fn connect(&self, deadline: Option<Instant>) -> Result<UnixStream, ClientError> {
        let connect_error = |source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        };
        let Some(deadline) = deadline else {
            return UnixStream::connect(&self.socket).map_err(connect_error);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let path = self.socket.clone();
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(UnixStream::connect(path));
            })
            .map_err(connect_error)?;
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => r.map_err(connect_error),
            Err(_) => Err(self.io_error(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Send a request and decode the JSON answer (or turn an error answer into `ClientError::Api`).
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (head, mut r) = self.send(method, path, body.as_deref())?;
        let mut data = Vec::new();
        copy_body(&head, &mut r, &mut data).map_err(|e| match e {
            ClientError::Io(e) => self.io_error(e),
            e => e,
        })?;
        if !(200..300).contains(&head.status) {
            return Err(api_error(head.status, &data));
        }
        if data.is_empty() {
            data.extend_from_slice(b"null");
        }
        serde_json::from_slice(&data)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&data))))
    }

    /// Send a GET and copy the (streamed) body to `out`, flushing as data arrives. The timeout
    /// bounds the answer's head (and an error's body), not the stream, which lasts as long as
    /// the daemon sends it.
    pub fn stream(&self, path: &str, out: &mut dyn Write) -> Result<(), ClientError> {
        let (head, mut r) = self.send("GET", path, None)?;
        if !(200..300).contains(&head.status) {
            let mut data = Vec::new();
            copy_body(&head, &mut r, &mut data).map_err(|e| match e {
                ClientError::Io(e) => self.io_error(e),
                e => e,
            })?;
            return Err(api_error(head.status, &data));
        }
        r.get_mut().deadline = None;
        match copy_body(&head, &mut r, out) {
            // The reader (say `tcpdump -r -` with -c) went away: not an error of ours.
            Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

fn api_error(status: u16, data: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(data) {
        Ok(b) => ClientError::Api(b.error),
        Err(_) => ClientError::Api(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(data).trim()
        )),
    }
}

fn read_head(r: &mut impl BufRead) -> Result<Head, ClientError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bad status line {:?}", line.trim_end())))?;
    let mut head = Head {
        status,
        chunked: false,
        length: None,
        restoring: None,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(ClientError::Protocol(
                "connection closed inside the headers".into(),
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(head);
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            head.chunked = true;
        } else if k == "content-length" {
            head.length = v.parse().ok();
        } else if k == RESTORING_HEADER {
            head.restoring = Some(v.to_string());
        }
    }
}

fn copy_body(
    head: &Head,
    r: &mut impl BufRead,
    out: &mut (impl Write + ?Sized),
) -> Result<(), ClientError> {
    if head.chunked {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(()); // closed early: keep what arrived
            }
            let size_text = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                return Ok(());
            }
            io::copy(&mut r.by_ref().take(size as u64), out)?;
            out.flush()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = head.length {
        io::copy(&mut r.take(n as u64), out)?;
    } else {
        io::copy(r, out)?;
    }
    out.flush()?;
    Ok(())
}

/// The connection to the daemon, each read and write bounded by what is left of the deadline.
struct Timed {
    s: UnixStream,
    deadline: Option<Instant>,
}

impl Timed {
    /// What is left of the deadline (`None`: no deadline), or `TimedOut` when it has passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::ErrorKind::TimedOut.into()),
            },
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.s.set_read_timeout(left)?;
        self.s.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.s.set_write_timeout(left)?;
        self.s.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// Percent-encode a query or path component.
pub fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let h = read_head(&mut r).unwrap();
        assert!(h.chunked);
        let mut out = Vec::new();
        copy_body(&h, &mut r, &mut out).unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn restoring_header() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Vswitch-Restoring: 12/300\r\ncontent-length: 2\r\n\r\n[]";
        let h = read_head(&mut BufReader::new(&raw[..])).unwrap();
        assert_eq!(h.restoring.as_deref(), Some("12/300"));
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert!(read_head(&mut BufReader::new(&raw[..]))
            .unwrap()
            .restoring
            .is_none());
    }

    #[test]
    fn a_daemon_that_never_answers_is_a_timeout_naming_the_socket() {
        let dir = std::env::temp_dir().join(format!("vswitchctl-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mute.sock");
        let _ = std::fs::remove_file(&path);
        // Accepts (the kernel's backlog does) and never reads or answers.
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let c = Client::new(&path).with_timeout(Some(Duration::from_millis(300)));
        let start = Instant::now();
        let e = c.call::<serde_json::Value>("GET", "/v1/networks", None::<&()>);
        let waited = start.elapsed();
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
        let e = e.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("0.3 s"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[test]
    fn encodes() {
        assert_eq!(encode("ns1/eth0"), "ns1%2Feth0");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
