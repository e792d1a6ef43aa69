//! The API client `vswitchctl` uses: HTTP/1.1 over the Unix socket, one request per connection.
//! Small on purpose (the daemon is the only server it talks to), but it follows HTTP: status
//! line, headers, and bodies delimited by Content-Length, chunked encoding, or end of stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use switch::model::ErrorBody;

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
}

/// A connection target.
pub struct Client {
    socket: PathBuf,
}

struct Head {
    status: u16,
    chunked: bool,
    length: Option<usize>,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Head, BufReader<UnixStream>), ClientError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        })?;
        let body = body.unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut r = BufReader::new(s);
        let head = read_head(&mut r)?;
        Ok((head, r))
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
        copy_body(&head, &mut r, &mut data)?;
        if !(200..300).contains(&head.status) {
            return Err(api_error(head.status, &data));
        }
        if data.is_empty() {
            data.extend_from_slice(b"null");
        }
        serde_json::from_slice(&data)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&data))))
    }

    /// Send a GET and copy the (streamed) body to `out`, flushing as data arrives.
    pub fn stream(&self, path: &str, out: &mut dyn Write) -> Result<(), ClientError> {
        let (head, mut r) = self.send("GET", path, None)?;
        if !(200..300).contains(&head.status) {
            let mut data = Vec::new();
            copy_body(&head, &mut r, &mut data)?;
            return Err(api_error(head.status, &data));
        }
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
    fn encodes() {
        assert_eq!(encode("ns1/eth0"), "ns1%2Feth0");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
