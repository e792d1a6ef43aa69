//! A small blocking client for etcd v3, spoken over etcd's gRPC-JSON gateway: HTTP/1.1 and JSON
//! on the client port, one short connection per request, a long-lived one per watch.
//!
//! What the gateway sends, and what this module relies on:
//! - keys and values are base64; int64 and uint64 fields are JSON strings (`"revision":"5"`);
//!   a field at its zero value is absent;
//! - an error is a non-200 answer `{"error":"..","message":"..","code":N}` (`code` is the gRPC
//!   status; 14, unavailable, moves on to the next endpoint);
//! - the streaming calls (`/v3/watch`, `/v3/lease/keepalive`) answer with a chunked body of
//!   `{"result":{..}}` objects, one per line, or `{"error":{..}}` when the stream fails.
//!
//! Every request tries the endpoints in order, starting with the last one that answered, and
//! moves to the next on a connection failure or a timeout. Nothing the server sends can make
//! this module panic: garbage, truncated or oversized answers are [`EtcdError::Protocol`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// The largest answer body (or one watch message) accepted.
const MAX_BODY: usize = 256 << 20;
/// The largest HTTP header block accepted.
const MAX_HEAD: usize = 64 << 10;
/// Keys per range request when reading a prefix.
const PAGE: i64 = 1000;
/// gRPC status `UNAVAILABLE`: this member cannot serve; another might.
const GRPC_UNAVAILABLE: i64 = 14;

/// Why an etcd request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint list given to [`Etcd::new`] is malformed.
    #[error("bad etcd endpoint list: {0}")]
    BadUrl(String),
    /// No endpoint answered: every endpoint tried and why it failed.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// An endpoint answered with something that is not etcd's gateway speaking JSON.
    #[error("etcd protocol error: {0}")]
    Protocol(String),
    /// The requested revision was compacted away; start again from a fresh read.
    #[error("etcd revision compacted (history kept from revision {compact_revision})")]
    Compacted {
        /// The revision etcd compacted up to.
        compact_revision: i64,
    },
    /// The lease expired or was revoked.
    #[error("etcd lease not found (expired or revoked)")]
    LeaseNotFound,
    /// etcd refused the request; its message.
    #[error("etcd error: {0}")]
    Server(String),
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key (a key that is not UTF-8 is converted lossily).
    pub key: String,
    /// The value, as stored.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision that last modified the key.
    pub mod_revision: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or modified.
    Put,
    /// Deleted (or its lease expired).
    Delete,
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the put; for a delete, the key with an empty value and `mod_revision` set
    /// to the deleting revision.
    pub kv: Kv,
}

/// An endpoint's view of the cluster, from `/v3/maintenance/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The endpoint that answered, `host:port`.
    pub endpoint: String,
    /// The store's current revision.
    pub revision: i64,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// The answering member's id, hex (as etcdctl prints it).
    pub member_id: String,
    /// The leader's member id, hex; `0` when there is no leader.
    pub leader: String,
}

/// One etcd client endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 address.
    fn name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A blocking etcd v3 client over the gRPC-JSON gateway. Cheap to share between threads.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    /// Index of the endpoint that answered last: where the next request starts.
    preferred: AtomicUsize,
}

impl Clone for Etcd {
    fn clone(&self) -> Etcd {
        Etcd {
            endpoints: self.endpoints.clone(),
            timeout: self.timeout,
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
        }
    }
}

/// How one attempt at one endpoint failed.
enum Failure {
    /// The endpoint could not be reached or did not answer in time: try the next one.
    Retry(String),
    /// The endpoint answered; the answer is final.
    Fatal(EtcdError),
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Failure {
        Failure::Fatal(e)
    }
}

impl Etcd {
    /// A client for the endpoints in `urls`: `etcd://h:p[,h:p...]`, `h:p,h:p` or
    /// `http://h:p[,http://h:p...]` (port 2379 when left out). Parses only; connects on the first
    /// request. `timeout` bounds each attempt at each endpoint (connect, send, answer).
    pub fn new(urls: &str, timeout: Duration) -> Result<Etcd, EtcdError> {
        if timeout.is_zero() {
            return Err(EtcdError::BadUrl("the timeout must not be zero".into()));
        }
        Ok(Etcd {
            endpoints: parse_urls(urls)?,
            timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The endpoints, `host:port`, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(Endpoint::name).collect()
    }

    /// The status of the first endpoint that answers.
    pub fn status(&self) -> Result<Status, EtcdError> {
        self.each_endpoint(|ep| {
            let resp: StatusResponse = self.call_at(ep, "/v3/maintenance/status", &json!({}))?;
            Ok(Status {
                endpoint: ep.name(),
                revision: resp.header.revision,
                version: resp.version,
                member_id: format!("{:x}", resp.header.member_id),
                leader: format!("{:x}", resp.leader),
            })
        })
    }

    /// The key, if it exists, and the store's revision at the read.
    pub fn get(&self, key: &str) -> Result<(Option<Kv>, i64), EtcdError> {
        let resp: RangeResponse = self.call("/v3/kv/range", &json!({ "key": b64(key) }))?;
        let kv = resp.kvs.into_iter().next().map(RawKv::into_kv);
        Ok((kv, resp.header.revision))
    }

    /// Every key starting with `prefix`, sorted by key, all read at one revision (returned), in
    /// pages so that no answer grows past the gateway's message limits.
    pub fn get_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        // The pages are read at the first page's revision; should it be compacted meanwhile,
        // start over at the newest.
        for _ in 0..2 {
            match self.range_pages(prefix) {
                Err(EtcdError::Compacted { .. }) => continue,
                other => return other,
            }
        }
        self.range_pages(prefix)
    }

    /// Writes the key (attached to `lease` unless 0); returns the revision of the write.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let resp: HeaderOnly = self.call("/v3/kv/put", &put_request(key, value, lease))?;
        Ok(resp.header.revision)
    }

    /// Writes the key only if it does not exist; false if it does.
    pub fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool, EtcdError> {
        let compare = json!({ "target": "CREATE", "result": "EQUAL", "key": b64(key),
                              "create_revision": 0 });
        let success = json!({ "request_put": put_request(key, value, lease) });
        Ok(self.txn(compare, success)?.succeeded)
    }

    /// Writes the key only if its `mod_revision` is the one given (0: only if it does not
    /// exist); false if it is not.
    pub fn put_if(
        &self,
        key: &str,
        value: &[u8],
        mod_revision: i64,
        lease: i64,
    ) -> Result<bool, EtcdError> {
        let success = json!({ "request_put": put_request(key, value, lease) });
        Ok(self.txn(mod_compare(key, mod_revision), success)?.succeeded)
    }

    /// Deletes the key; false if it did not exist.
    pub fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let resp: DeleteResponse = self.call("/v3/kv/deleterange", &json!({ "key": b64(key) }))?;
        Ok(resp.deleted > 0)
    }

    /// Deletes the key only if its `mod_revision` is the one given; true if it was deleted.
    pub fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, EtcdError> {
        let success = json!({ "request_delete_range": { "key": b64(key) } });
        let resp = self.txn(mod_compare(key, mod_revision), success)?;
        let deleted = resp
            .responses
            .iter()
            .filter_map(|op| op.response_delete_range.as_ref())
            .map(|d| d.deleted)
            .sum::<i64>();
        Ok(resp.succeeded && deleted > 0)
    }

    /// Deletes every key starting with `prefix`; returns how many were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64, EtcdError> {
        let req = json!({ "key": b64(prefix), "range_end": b64(prefix_end(prefix.as_bytes())) });
        let resp: DeleteResponse = self.call("/v3/kv/deleterange", &req)?;
        Ok(u64::try_from(resp.deleted).unwrap_or(0))
    }

    /// A new lease living `ttl_secs` seconds unless kept alive; returns its id.
    pub fn grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let resp: GrantResponse = self.call("/v3/lease/grant", &json!({ "TTL": ttl_secs }))?;
        if !resp.error.is_empty() {
            return Err(EtcdError::Server(resp.error));
        }
        if resp.id == 0 {
            return Err(EtcdError::Protocol(
                "lease grant answered without a lease id".into(),
            ));
        }
        Ok(resp.id)
    }

    /// Renews the lease once; returns its remaining TTL in seconds.
    /// [`EtcdError::LeaseNotFound`] when it expired or was revoked.
    pub fn keepalive(&self, lease: i64) -> Result<i64, EtcdError> {
        let req = json!({ "ID": lease });
        self.each_endpoint(|ep| {
            let body = self.post(ep, "/v3/lease/keepalive", &req)?;
            let msg = first_message(ep, &body)?;
            let resp: KeepaliveResponse = stream_result(ep, msg)?;
            if resp.ttl <= 0 {
                return Err(EtcdError::LeaseNotFound.into());
            }
            Ok(resp.ttl)
        })
    }

    /// Revokes the lease, deleting its keys. [`EtcdError::LeaseNotFound`] if it is gone already.
    pub fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let _: HeaderOnly = self.call("/v3/lease/revoke", &json!({ "ID": lease }))?;
        Ok(())
    }

    /// Compacts the history up to `revision` (physically, before returning).
    pub fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let req = json!({ "revision": revision, "physical": true });
        let _: HeaderOnly = self.call("/v3/kv/compaction", &req)?;
        Ok(())
    }

    /// Watches every key starting with `prefix`, from `start_revision` (0: from now on), with
    /// progress notifications on. Returns once the endpoint has accepted the watch.
    pub fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let req = json!({ "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix.as_bytes())),
            "start_revision": start_revision,
            "progress_notify": true,
        }});
        let body = req.to_string();
        self.each_endpoint(|ep| {
            let deadline = Instant::now() + self.timeout;
            let mut conn = Conn::open(ep, self.timeout)?;
            conn.send("/v3/watch", body.as_bytes())?;
            let head = conn.read_head(deadline)?;
            if head.status != 200 {
                let answer = conn.read_body(head.body, deadline)?;
                return Err(error_answer(ep, head.status, &answer));
            }
            Ok(Watch {
                conn,
                body: head.body,
                payload: Vec::new(),
                scanned: 0,
                ended: false,
            })
        })
    }

    /// Reads the keys in `[prefix, prefix_end)` page by page at one revision.
    fn range_pages(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let end = b64(prefix_end(prefix.as_bytes()));
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let req = json!({ "key": b64(&from), "range_end": end, "limit": PAGE,
                              "revision": revision });
            let resp: RangeResponse = self.call("/v3/kv/range", &req)?;
            if revision == 0 {
                revision = resp.header.revision;
            }
            let next = resp.kvs.last().map(|kv| kv.key.clone());
            out.extend(resp.kvs.into_iter().map(RawKv::into_kv));
            match next {
                Some(mut key) if resp.more => {
                    key.push(0);
                    from = key;
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// One transaction of one compare and one operation on success.
    fn txn(&self, compare: Value, success: Value) -> Result<TxnResponse, EtcdError> {
        self.call(
            "/v3/kv/txn",
            &json!({ "compare": [compare], "success": [success] }),
        )
    }

    /// Posts `req` to `path` at the endpoints in turn; the first answer, decoded.
    fn call<T: DeserializeOwned>(&self, path: &str, req: &Value) -> Result<T, EtcdError> {
        self.each_endpoint(|ep| self.call_at(ep, path, req))
    }

    /// Posts `req` to `path` at one endpoint; its answer, decoded.
    fn call_at<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        path: &str,
        req: &Value,
    ) -> Result<T, Failure> {
        let body = self.post(ep, path, req)?;
        serde_json::from_slice(&body).map_err(|e| {
            Failure::Fatal(EtcdError::Protocol(format!(
                "{}: {path}: not an etcd answer: {e}: {}",
                ep.name(),
                snippet(&body)
            )))
        })
    }

    /// One HTTP POST at one endpoint; the body of a 200 answer.
    fn post(&self, ep: &Endpoint, path: &str, req: &Value) -> Result<Vec<u8>, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = Conn::open(ep, self.timeout)?;
        conn.send(path, req.to_string().as_bytes())?;
        let head = conn.read_head(deadline)?;
        let body = conn.read_body(head.body, deadline)?;
        if head.status == 200 {
            Ok(body)
        } else {
            Err(error_answer(ep, head.status, &body))
        }
    }

    /// Runs `attempt` at each endpoint in turn, starting with the one that answered last, until
    /// one answers; remembers it.
    fn each_endpoint<T>(
        &self,
        mut attempt: impl FnMut(&Endpoint) -> Result<T, Failure>,
    ) -> Result<T, EtcdError> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut why = Vec::with_capacity(n);
        for i in 0..n {
            let index = (start + i) % n;
            let ep = &self.endpoints[index];
            match attempt(ep) {
                Ok(v) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Failure::Retry(e)) => why.push(format!("{}: {e}", ep.name())),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(EtcdError::Unreachable(why.join("; ")))
    }
}

/// An open watch stream.
#[derive(Debug)]
pub struct Watch {
    conn: Conn,
    /// How the answer body is framed.
    body: Body,
    /// Decoded body bytes not yet taken as messages.
    payload: Vec<u8>,
    /// How much of `payload` was looked at without finding a whole message.
    scanned: usize,
    /// The body ended (the server closed the stream).
    ended: bool,
}

impl Watch {
    /// The next batch of events, in revision order, and the header revision of the message that
    /// carried them. An empty batch is a progress notification: every change up to the revision
    /// has been delivered. `Ok(None)` when `wait` passed with nothing received (check for
    /// shutdown and call again). [`EtcdError::Compacted`] when the start revision was compacted;
    /// [`EtcdError::Unreachable`] or [`EtcdError::Protocol`] when the stream broke.
    pub fn next(&mut self, wait: Duration) -> Result<Option<(Vec<Event>, i64)>, EtcdError> {
        let deadline = Instant::now() + wait;
        loop {
            self.pump()?;
            while let Some(msg) = self.take_message()? {
                if let Some(batch) = self.batch(msg)? {
                    return Ok(Some(batch));
                }
            }
            if self.ended {
                return Err(self.broken("the watch stream ended"));
            }
            match self.conn.fill(deadline) {
                Ok(true) => {}
                Ok(false) => return Err(self.broken("the watch stream was closed")),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(self.broken(&describe(&e))),
            }
        }
    }

    /// The endpoint this watch is connected to, `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.conn.name
    }

    /// Moves what has arrived from the connection into `payload`.
    fn pump(&mut self) -> Result<(), EtcdError> {
        if !self.ended {
            self.ended = self
                .body
                .pump(&mut self.conn.buf, &mut self.payload)
                .map_err(|e| self.protocol(&e))?;
        }
        if self.payload.len() > MAX_BODY {
            return Err(self.protocol("watch message too large"));
        }
        Ok(())
    }

    /// The next whole JSON message in `payload`, if one has arrived.
    fn take_message(&mut self) -> Result<Option<Value>, EtcdError> {
        let Some(start) = self.payload.iter().position(|b| !b.is_ascii_whitespace()) else {
            self.payload.clear();
            self.scanned = 0;
            return Ok(None);
        };
        // The gateway ends each message with a newline: parse only when one (or a closing
        // brace at the very end) has arrived, so a large message is not parsed once per read.
        let fresh = &self.payload[self.scanned.max(start)..];
        let ends_object = self.payload.trim_ascii_end().last() == Some(&b'}');
        if !fresh.contains(&b'\n') && !ends_object {
            self.scanned = self.payload.len();
            return Ok(None);
        }
        let mut stream =
            serde_json::Deserializer::from_slice(&self.payload[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(msg)) => {
                let used = start + stream.byte_offset();
                self.payload.drain(..used);
                self.scanned = 0;
                Ok(Some(msg))
            }
            Some(Err(e)) if e.is_eof() => {
                self.scanned = self.payload.len();
                Ok(None)
            }
            Some(Err(e)) => Err(self.protocol(&format!("bad watch message: {e}"))),
            None => Ok(None),
        }
    }

    /// The batch a message carries: `None` for the creation notice.
    fn batch(&self, msg: Value) -> Result<Option<(Vec<Event>, i64)>, EtcdError> {
        let name = &self.conn.name;
        let resp: WatchResponse = stream_value(name, msg).map_err(failure_error)?;
        if resp.compact_revision > 0 {
            return Err(EtcdError::Compacted {
                compact_revision: resp.compact_revision,
            });
        }
        if resp.canceled {
            return Err(EtcdError::Server(format!(
                "{name}: watch canceled: {}",
                resp.cancel_reason
            )));
        }
        if resp.created && resp.events.is_empty() {
            return Ok(None);
        }
        let events = resp
            .events
            .into_iter()
            .map(|e| e.into_event(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((events, resp.header.revision)))
    }

    /// The stream broke: why, naming the endpoint.
    fn broken(&self, why: &str) -> EtcdError {
        EtcdError::Unreachable(format!("{}: {why}", self.conn.name))
    }

    /// The stream carried something that is not etcd's: what, naming the endpoint.
    fn protocol(&self, why: &str) -> EtcdError {
        EtcdError::Protocol(format!("{}: {why}", self.conn.name))
    }
}

/// A `Failure` from a stream message, as the error a watch returns.
fn failure_error(f: Failure) -> EtcdError {
    match f {
        Failure::Retry(why) => EtcdError::Unreachable(why),
        Failure::Fatal(e) => e,
    }
}

// ---- The endpoint list ----

/// Parses `etcd://h:p,h:p`, `h:p,h:p` or `http://h:p,http://h:p`.
fn parse_urls(urls: &str) -> Result<Vec<Endpoint>, EtcdError> {
    let list = urls.trim();
    let list = list.strip_prefix("etcd://").unwrap_or(list);
    if list.is_empty() {
        return Err(EtcdError::BadUrl("no endpoint given".into()));
    }
    list.split(',')
        .map(|item| parse_endpoint(item.trim()))
        .collect()
}

/// Parses one `[http://]host[:port][/]`.
fn parse_endpoint(item: &str) -> Result<Endpoint, EtcdError> {
    let bad = |why: &str| EtcdError::BadUrl(format!("'{item}': {why}"));
    let rest = item
        .strip_prefix("http://")
        .or_else(|| item.strip_prefix("etcd://"))
        .unwrap_or(item);
    if rest.contains("://") {
        return Err(bad(
            "only http:// and etcd:// endpoints are supported (no TLS)",
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest).ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#[]".contains(c)) {
        return Err(bad("bad host"));
    }
    let port = match port {
        None => 2379,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// `host:port`, `host`, `[v6]:port` or `[v6]` split into host and port.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

// ---- Requests and answers ----

/// A put request's body.
fn put_request(key: &str, value: &[u8], lease: i64) -> Value {
    json!({ "key": b64(key), "value": b64(value), "lease": lease })
}

/// A compare on the key's mod_revision.
fn mod_compare(key: &str, mod_revision: i64) -> Value {
    json!({ "target": "MOD", "result": "EQUAL", "key": b64(key), "mod_revision": mod_revision })
}

/// The end of the range holding every key that starts with `prefix`: the prefix with its last
/// byte below 0xff incremented and what follows dropped; `\0` (no end) if there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The error a non-200 answer carries.
fn error_answer(ep: &Endpoint, status: u16, body: &[u8]) -> Failure {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    match parsed.as_ref().and_then(gateway_error) {
        Some((code, msg)) => server_error(&ep.name(), code, msg),
        None => Failure::Fatal(EtcdError::Protocol(format!(
            "{}: HTTP {status}, not an etcd answer: {}",
            ep.name(),
            snippet(body)
        ))),
    }
}

/// The gRPC code and message of a gateway error, unary (`{"error":"..","code":N}`) or streamed
/// (`{"error":{"grpc_code":N,"message":".."}}`).
fn gateway_error(v: &Value) -> Option<(i64, String)> {
    let error = v.get("error")?;
    let (code, msg) = match error {
        Value::Object(inner) => (inner.get("grpc_code"), inner.get("message")),
        _ => (v.get("code"), v.get("message").or(Some(error))),
    };
    let msg = msg.and_then(Value::as_str).unwrap_or_default().to_string();
    Some((code.and_then(Value::as_i64).unwrap_or(0), msg))
}

/// What an etcd error message means.
fn server_error(name: &str, code: i64, msg: String) -> Failure {
    if code == GRPC_UNAVAILABLE {
        return Failure::Retry(format!("unavailable: {msg}"));
    }
    if msg.contains("requested lease not found") {
        return Failure::Fatal(EtcdError::LeaseNotFound);
    }
    if msg.contains("required revision has been compacted") {
        return Failure::Fatal(EtcdError::Compacted {
            compact_revision: 0,
        });
    }
    Failure::Fatal(EtcdError::Server(format!("{name}: {msg}")))
}

/// The first JSON message of a streamed answer.
fn first_message(ep: &Endpoint, body: &[u8]) -> Result<Value, Failure> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Failure::Fatal(EtcdError::Protocol(format!(
            "{}: not an etcd stream: {e}: {}",
            ep.name(),
            snippet(body)
        )))),
        None => Err(Failure::Fatal(EtcdError::Protocol(format!(
            "{}: empty stream answer",
            ep.name()
        )))),
    }
}

/// The `result` of a streamed message, decoded; its `error` as a failure.
fn stream_result<T: DeserializeOwned>(ep: &Endpoint, msg: Value) -> Result<T, Failure> {
    stream_value(&ep.name(), msg)
}

/// [`stream_result`] for an endpoint named `name`.
fn stream_value<T: DeserializeOwned>(name: &str, mut msg: Value) -> Result<T, Failure> {
    if let Some((code, text)) = gateway_error(&msg) {
        return Err(server_error(name, code, text));
    }
    let protocol = |why: String| Failure::Fatal(EtcdError::Protocol(format!("{name}: {why}")));
    let Some(result) = msg.get_mut("result").map(Value::take) else {
        return Err(protocol(format!("stream message without a result: {msg}")));
    };
    serde_json::from_value(result).map_err(|e| protocol(format!("bad stream message: {e}")))
}

/// The start of an answer, whitespace collapsed, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
    let words = text.split(|c: char| c.is_whitespace() || c.is_control());
    let out = words
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    out.chars().take(120).collect()
}

/// The response header every answer carries.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int")]
    revision: i64,
    #[serde(deserialize_with = "int", alias = "memberId")]
    member_id: u64,
}

/// An answer of which only the header matters.
#[derive(Debug, Deserialize)]
struct HeaderOnly {
    header: Header,
}

/// `/v3/maintenance/status`.
#[derive(Debug, Deserialize)]
struct StatusResponse {
    header: Header,
    #[serde(default)]
    version: String,
    #[serde(default, deserialize_with = "int")]
    leader: u64,
}

/// `/v3/kv/range`.
#[derive(Debug, Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default)]
    more: bool,
}

/// `/v3/kv/deleterange`, also inside a transaction's answer.
#[derive(Debug, Deserialize)]
struct DeleteResponse {
    #[serde(default, deserialize_with = "int")]
    deleted: i64,
}

/// `/v3/kv/txn`.
#[derive(Debug, Deserialize)]
struct TxnResponse {
    /// Not read, but required: every etcd answer has one.
    #[allow(dead_code)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<ResponseOp>,
}

/// One operation's answer in a transaction.
#[derive(Debug, Deserialize)]
struct ResponseOp {
    #[serde(default)]
    response_delete_range: Option<DeleteResponse>,
}

/// `/v3/lease/grant`.
#[derive(Debug, Deserialize)]
struct GrantResponse {
    /// Not read, but required: every etcd answer has one.
    #[allow(dead_code)]
    header: Header,
    #[serde(default, rename = "ID", deserialize_with = "int")]
    id: i64,
    #[serde(default)]
    error: String,
}

/// One `/v3/lease/keepalive` result.
#[derive(Debug, Deserialize)]
struct KeepaliveResponse {
    #[serde(default, rename = "TTL", deserialize_with = "int")]
    ttl: i64,
}

/// One `/v3/watch` result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResponse {
    header: Header,
    created: bool,
    canceled: bool,
    #[serde(deserialize_with = "int", alias = "compactRevision")]
    compact_revision: i64,
    #[serde(alias = "cancelReason")]
    cancel_reason: String,
    events: Vec<RawEvent>,
}

/// A watch event as sent.
#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(default, rename = "type")]
    kind: Value,
    kv: Option<RawKv>,
}

impl RawEvent {
    /// The event, or a protocol error for an unknown type or a missing key.
    fn into_event(self, name: &str) -> Result<Event, EtcdError> {
        let kind = match &self.kind {
            Value::Null => EventKind::Put,
            Value::String(s) if s == "PUT" => EventKind::Put,
            Value::Number(n) if n.as_i64() == Some(0) => EventKind::Put,
            Value::String(s) if s == "DELETE" => EventKind::Delete,
            Value::Number(n) if n.as_i64() == Some(1) => EventKind::Delete,
            other => {
                return Err(EtcdError::Protocol(format!(
                    "{name}: unknown watch event type {other}"
                )))
            }
        };
        let kv = self
            .kv
            .ok_or_else(|| EtcdError::Protocol(format!("{name}: watch event without a key")))?;
        Ok(Event {
            kind,
            kv: kv.into_kv(),
        })
    }
}

/// A key-value as sent: base64 key and value, revisions as strings.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawKv {
    #[serde(deserialize_with = "base64_field")]
    key: Vec<u8>,
    #[serde(deserialize_with = "base64_field")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int", alias = "createRevision")]
    create_revision: i64,
    #[serde(deserialize_with = "int", alias = "modRevision")]
    mod_revision: i64,
    #[serde(deserialize_with = "int")]
    lease: i64,
}

impl RawKv {
    fn into_kv(self) -> Kv {
        Kv {
            key: String::from_utf8(self.key)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

/// An integer sent as a JSON string or number (or null: 0), range-checked into `T`.
fn int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::Error;
    let wide: i128 = match Value::deserialize(d)? {
        Value::Null => 0,
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i128::from(i),
            (_, Some(u)) => i128::from(u),
            _ => return Err(D::Error::custom(format!("{n} is not an integer"))),
        },
        Value::String(s) => s
            .parse()
            .map_err(|_| D::Error::custom(format!("'{s}' is not an integer")))?,
        other => return Err(D::Error::custom(format!("{other} is not an integer"))),
    };
    T::try_from(wide).map_err(|_| D::Error::custom(format!("{wide} is out of range")))
}

/// Bytes sent as a base64 string (or null: empty).
fn base64_field<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use serde::de::Error;
    match Option::<String>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(s) => unb64(&s).ok_or_else(|| D::Error::custom("bad base64")),
    }
}

// ---- Base64 (RFC 4648, the standard alphabet, as Go's encoding/json writes bytes) ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 with padding.
fn b64(data: impl AsRef<[u8]>) -> String {
    let data = data.as_ref();
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, standard or URL-safe alphabet, padding optional; `None` if malformed.
fn unb64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6 | u32::from(v)) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A lone trailing character holds fewer than 8 bits: not valid base64.
    (bits < 6).then_some(out)
}

// ---- HTTP/1.1 ----

/// One connection to one endpoint, with what was read but not yet consumed.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// `host:port`, for messages and the Host header.
    name: String,
    /// The per-attempt timeout, for messages.
    timeout: Duration,
    buf: Vec<u8>,
}

/// The status line and framing of an answer.
struct Head {
    status: u16,
    body: Body,
}

/// How an answer's body is framed, and how far it has been read.
#[derive(Debug)]
enum Body {
    /// `Content-Length`: the bytes still to come.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// Neither: the body ends when the connection closes.
    UntilClose,
}

impl Conn {
    /// Connects to the endpoint, trying each of its addresses.
    fn open(ep: &Endpoint, timeout: Duration) -> Result<Conn, Failure> {
        let addrs = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Retry(format!("cannot resolve: {e}")))?;
        let mut why = String::from("no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream
                        .set_write_timeout(Some(timeout))
                        .map_err(|e| Failure::Retry(describe(&e)))?;
                    return Ok(Conn {
                        stream,
                        name: ep.name(),
                        timeout,
                        buf: Vec::new(),
                    });
                }
                Err(e) => why = describe(&e),
            }
        }
        Err(Failure::Retry(why))
    }

    /// Sends a POST with a JSON body.
    fn send(&mut self, path: &str, body: &[u8]) -> Result<(), Failure> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.name,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .map_err(|e| Failure::Retry(format!("sending the request: {}", describe(&e))))
    }

    /// Reads more bytes into `buf` until `deadline`; false at the end of the stream.
    fn fill(&mut self, deadline: Instant) -> io::Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the status line and headers.
    fn read_head(&mut self, deadline: Instant) -> Result<Head, Failure> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end]).map_err(|e| self.protocol(&e))?;
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            let prefix = &self.buf[..self.buf.len().min(5)];
            if !b"HTTP/".starts_with(prefix) {
                return Err(self.protocol(&format!("not an HTTP answer: {}", snippet(&self.buf))));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(self.protocol("HTTP header too long"));
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => {
                    return Err(Failure::Retry(
                        "closed the connection without answering".into(),
                    ))
                }
                Ok(false) => return Err(self.protocol("HTTP header cut short")),
                Err(e) if is_timeout(&e) && self.buf.is_empty() => {
                    return Err(Failure::Retry(format!(
                        "no answer within {:?}",
                        self.timeout
                    )))
                }
                Err(e) => return Err(Failure::Retry(describe(&e))),
            }
        }
    }

    /// Reads the whole body.
    fn read_body(&mut self, mut body: Body, deadline: Instant) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        loop {
            if body
                .pump(&mut self.buf, &mut out)
                .map_err(|e| self.protocol(&e))?
            {
                return Ok(out);
            }
            if out.len() > MAX_BODY {
                return Err(self.protocol("answer too large"));
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) if matches!(body, Body::UntilClose) => {
                    out.append(&mut self.buf);
                    return Ok(out);
                }
                Ok(false) => return Err(self.protocol("answer cut short")),
                Err(e) => {
                    return Err(Failure::Retry(format!(
                        "reading the answer: {}",
                        describe(&e)
                    )))
                }
            }
        }
    }

    /// A protocol failure naming this endpoint.
    fn protocol(&self, why: &str) -> Failure {
        Failure::Fatal(EtcdError::Protocol(format!("{}: {why}", self.name)))
    }
}

impl Body {
    /// Moves the body bytes that have arrived in `raw` to `out`; true once the body is complete.
    fn pump(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Body::Length(left) => {
                let take = (*left).min(raw.len());
                out.extend(raw.drain(..take));
                *left -= take;
                Ok(*left == 0)
            }
            Body::Chunked(chunked) => chunked.decode(raw, out),
            Body::UntilClose => {
                out.append(raw);
                Ok(false)
            }
        }
    }
}

/// Parses the status line and the framing headers.
fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad HTTP status line: {}", snippet(status_line.as_bytes())))?;
    let mut body = Body::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().contains("chunked") {
                body = Body::Chunked(Chunked::default());
            }
        } else if name.eq_ignore_ascii_case("content-length") && !matches!(body, Body::Chunked(_)) {
            let n = value
                .parse::<usize>()
                .map_err(|_| format!("bad Content-Length '{value}'"))?;
            if n > MAX_BODY {
                return Err(format!("answer too large ({n} bytes)"));
            }
            body = Body::Length(n);
        }
    }
    Ok(Head { status, body })
}

/// A chunked-body decoder that takes its input in pieces of any size.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
}

/// Where a chunked decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: the bytes still to come.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Moves the data of every complete piece of `raw` to `out`, leaving an incomplete line in
    /// `raw`; true once the terminating chunk and trailers have been read.
    fn decode(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, String> {
        let mut pos = 0;
        while let Some(used) = self.step(&raw[pos..], out)? {
            pos += used;
        }
        raw.drain(..pos);
        Ok(self.state == ChunkState::Done)
    }

    /// Decodes one piece at the start of `input`: the bytes used, `None` when more input is
    /// needed (or the body is done).
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, String> {
        match self.state {
            ChunkState::Size => {
                let Some(line) = line(input)? else {
                    return Ok(None);
                };
                let size = chunk_size(&input[..line])?;
                self.state = if size == 0 {
                    ChunkState::Trailer
                } else {
                    ChunkState::Data(size)
                };
                Ok(Some(line + 2))
            }
            ChunkState::Data(left) => {
                let take = left.min(input.len());
                if take == 0 {
                    return Ok(None);
                }
                out.extend_from_slice(&input[..take]);
                self.state = match left - take {
                    0 => ChunkState::DataEnd,
                    rest => ChunkState::Data(rest),
                };
                Ok(Some(take))
            }
            ChunkState::DataEnd => match input.get(..2) {
                None => Ok(None),
                Some(b"\r\n") => {
                    self.state = ChunkState::Size;
                    Ok(Some(2))
                }
                Some(_) => Err("chunk data not followed by CRLF".into()),
            },
            ChunkState::Trailer => {
                let Some(line) = line(input)? else {
                    return Ok(None);
                };
                if line == 0 {
                    self.state = ChunkState::Done;
                }
                Ok(Some(line + 2))
            }
            ChunkState::Done => Ok(None),
        }
    }
}

/// The length of the CRLF-terminated line at the start of `input`, if it has all arrived.
fn line(input: &[u8]) -> Result<Option<usize>, String> {
    match find(input, b"\r\n") {
        Some(n) => Ok(Some(n)),
        None if input.len() > 4096 => Err("chunk line too long".into()),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hex, extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(line);
    let hex = text.split(';').next().unwrap_or_default().trim();
    let size = hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| usize::from_str_radix(hex, 16).ok())
        .flatten()
        .ok_or_else(|| format!("bad chunk size '{}'", snippet(line)))?;
    if size > MAX_BODY {
        return Err(format!("chunk too large ({size} bytes)"));
    }
    Ok(size)
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A read or connect that ran out of time.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A socket error, short: "connection refused", "timed out".
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::BrokenPipe => "connection closed".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A real etcd for tests: one member on free loopback ports with its data in a fresh temporary
/// directory, killed and removed on drop (also when the test fails).
#[cfg(any(test, feature = "harness"))]
pub mod testing {
    use std::fs::{self, File};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::Etcd;

    /// How long a member may take to start and elect itself.
    const START_TIMEOUT: Duration = Duration::from_secs(30);

    /// One etcd member run by a test.
    #[derive(Debug)]
    pub struct TestEtcd {
        /// The client URL, `http://127.0.0.1:PORT`.
        pub url: String,
        /// The client port.
        pub port: u16,
        /// The peer port.
        pub peer_port: u16,
        /// The temporary directory: the data directory `data` and the log `etcd.log`.
        pub dir: PathBuf,
        child: Option<Child>,
    }

    impl TestEtcd {
        /// Starts a member and waits until it answers with a leader. Panics (failing the test)
        /// when the `etcd` binary is missing or the member does not come up.
        pub fn start() -> TestEtcd {
            let mut last = String::new();
            // A free port picked here can be taken by a parallel test before etcd binds it:
            // try a few times.
            for _ in 0..4 {
                let mut etcd = TestEtcd {
                    url: String::new(),
                    port: free_port(),
                    peer_port: free_port(),
                    dir: temp_dir(),
                    child: None,
                };
                etcd.url = format!("http://127.0.0.1:{}", etcd.port);
                match etcd.spawn() {
                    Ok(()) => return etcd,
                    Err(e) => last = e,
                }
            }
            panic!("etcd did not start: {last}");
        }

        /// A client for this member.
        pub fn client(&self) -> Etcd {
            match Etcd::new(&self.url, Duration::from_secs(5)) {
                Ok(etcd) => etcd,
                Err(e) => panic!("client for {}: {e}", self.url),
            }
        }

        /// Kills the member (SIGKILL) and waits for it; its data stays.
        pub fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts the stopped member again on the same ports and data, and waits until it
        /// answers.
        pub fn start_again(&mut self) {
            self.stop();
            if let Err(e) = self.spawn() {
                panic!("etcd did not start again: {e}");
            }
        }

        /// Starts etcd and waits for it; on failure, kills it and says why with its log.
        fn spawn(&mut self) -> Result<(), String> {
            fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
            let log_path = self.dir.join("etcd.log");
            let log = File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let err_log = log.try_clone().map_err(|e| e.to_string())?;
            let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
            let peer = format!("http://127.0.0.1:{}", self.peer_port);
            let child = Command::new(&binary)
                .args(["--name", "t", "--logger", "zap", "--data-dir"])
                .arg(self.dir.join("data"))
                .args(["--listen-client-urls", &self.url])
                .args(["--advertise-client-urls", &self.url])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("t={peer}")])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log)
                .spawn();
            match child {
                Ok(child) => self.child = Some(child),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "the etcd binary ('{binary}') is not installed: these tests need a real etcd; \
                     install the Debian package etcd-server (apt-get install etcd-server) or set \
                     ETCD_BIN"
                ),
                Err(e) => return Err(format!("cannot run {binary}: {e}")),
            }
            self.wait_ready().inspect_err(|_| self.stop())
        }

        /// Waits until the member answers a status with a leader.
        fn wait_ready(&mut self) -> Result<(), String> {
            let client = Etcd::new(&self.url, Duration::from_secs(1)).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + START_TIMEOUT;
            let mut why = String::from("no answer");
            while Instant::now() < deadline {
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(exit)) = child.try_wait() {
                        return Err(format!("etcd exited ({exit}): {}", self.log_tail()));
                    }
                }
                match client.status() {
                    Ok(status) if status.leader != "0" => return Ok(()),
                    Ok(_) => why = "no leader yet".into(),
                    Err(e) => why = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(format!(
                "not ready after {START_TIMEOUT:?} ({why}): {}",
                self.log_tail()
            ))
        }

        /// The last lines of the member's log.
        fn log_tail(&self) -> String {
            let log = fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        }
    }

    impl Drop for TestEtcd {
        fn drop(&mut self) {
            self.stop();
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// A loopback port nothing listens on (at the moment of asking).
    pub fn free_port() -> u16 {
        match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("no free loopback port: {e}"),
        }
    }

    /// A fresh directory name under the system's temporary directory.
    fn temp_dir() -> PathBuf {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!(
            "vswitch-etcd-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

#[cfg(test)]
mod test {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::testing::{free_port, TestEtcd};
    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// Unwraps a result in a test, printing the error.
    fn ok<V>(r: Result<V, EtcdError>) -> V {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits up to `wait` for `n` events, collecting batches.
    fn collect(watch: &mut Watch, n: usize, wait: Duration) -> Vec<Event> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        while events.len() < n && Instant::now() < deadline {
            if let Some((batch, _)) = ok(watch.next(Duration::from_millis(500))) {
                events.extend(batch);
            }
        }
        events
    }

    /// A loopback server answering every connection with `answer` (or nothing if empty, holding
    /// the connection open); its address.
    fn fake_server(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    let mut req = [0u8; 4096];
                    let _ = conn.read(&mut req);
                    let _ = conn.write_all(answer);
                    thread::sleep(Duration::from_secs(if answer.is_empty() { 10 } else { 0 }));
                });
            }
        });
        addr
    }

    #[test]
    fn endpoint_lists_parse() {
        let e = ok(Etcd::new("etcd://a:1,b:2", T));
        assert_eq!(e.endpoints(), ["a:1", "b:2"]);
        let e = ok(Etcd::new("http://127.0.0.1:2379/, http://[::1]:3", T));
        assert_eq!(e.endpoints(), ["127.0.0.1:2379", "[::1]:3"]);
        assert_eq!(ok(Etcd::new("h", T)).endpoints(), ["h:2379"]);
        for bad in [
            "",
            "https://a:1",
            "a:x",
            "a:0",
            "a:1,,b:2",
            "a:1/v3",
            "[::1",
        ] {
            match Etcd::new(bad, T) {
                Err(EtcdError::BadUrl(msg)) => assert!(!msg.is_empty()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            &[0, 0xff, 0xfe, 0x80, 1],
        ] {
            assert_eq!(unb64(&b64(data)).as_deref(), Some(data));
        }
        assert_eq!(b64("foo"), "Zm9v");
        assert_eq!(b64("fo"), "Zm8=");
        assert_eq!(unb64("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(unb64("Z"), None);
        assert_eq!(unb64("Zm9v!"), None);
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn chunked_decoding_takes_input_in_any_pieces() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for piece in 1..wire.len() {
            let mut dec = Chunked::default();
            let (mut raw, mut out, mut done) = (Vec::new(), Vec::new(), false);
            for part in wire.chunks(piece) {
                raw.extend_from_slice(part);
                done = dec.decode(&mut raw, &mut out).expect("decode");
            }
            assert!(done, "piece {piece}");
            assert_eq!(out, b"hello world");
        }
        for bad in [
            &b"zz\r\n"[..],
            b"+5\r\n",
            b"3\r\nabcXY",
            b"fffffffffffffffffff\r\n",
        ] {
            let mut raw = bad.to_vec();
            assert!(Chunked::default()
                .decode(&mut raw, &mut Vec::new())
                .is_err());
        }
    }

    #[test]
    fn garbage_answers_are_protocol_errors_naming_the_endpoint() {
        let answers: [&'static [u8]; 9] = [
            b"HTTP/1.0 501 Unsupported method ('POST')\r\nContent-Type: text/html\r\n\r\n<html>",
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{\"header\":{\"revision\":true}}  ",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{\"header\":{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 18\r\n\r\n404 page not found",
        ];
        for answer in answers {
            let addr = fake_server(answer);
            let etcd = ok(Etcd::new(&addr, T));
            let started = Instant::now();
            match etcd.put("k", b"v", 0) {
                Err(EtcdError::Protocol(msg)) => assert!(msg.contains(&addr), "{msg}"),
                other => panic!("{}: {other:?}", snippet(answer)),
            }
            assert!(started.elapsed() < T, "{}", snippet(answer));
        }
    }

    #[test]
    fn a_silent_server_times_out_as_unreachable() {
        let addr = fake_server(b"");
        let etcd = ok(Etcd::new(&addr, Duration::from_millis(500)));
        let started = Instant::now();
        match etcd.get("k") {
            Err(EtcdError::Unreachable(msg)) => assert!(msg.contains(&addr), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn watch_parses_messages_split_across_chunks_and_joined_in_one() {
        let messages = concat!(
            "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n",
            "{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":[{\"kv\":{\"key\":\"YQ==\",",
            "\"value\":\"MQ==\",\"mod_revision\":\"6\"}}]}}\n",
            "{\"result\":{\"header\":{\"revision\":\"7\"},\"events\":[{\"type\":\"DELETE\",",
            "\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"7\"}}]}}\n",
        );
        // Chunk boundaries that fall inside messages, and chunks holding several messages.
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in messages.as_bytes().chunks(70) {
            answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            answer.extend_from_slice(piece);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let addr = fake_server(answer.leak());
        let etcd = ok(Etcd::new(&addr, T));
        let mut watch = ok(etcd.watch("a", 0));
        let (events, rev) = ok(watch.next(T)).expect("first batch");
        assert_eq!(rev, 6);
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(
            (events[0].kv.key.as_str(), &events[0].kv.value[..]),
            ("a", &b"1"[..])
        );
        let (events, rev) = ok(watch.next(T)).expect("second batch");
        assert_eq!(
            (rev, events[0].kind, events[0].kv.mod_revision),
            (7, EventKind::Delete, 7)
        );
        assert!(matches!(watch.next(T), Err(EtcdError::Unreachable(_))));
    }

    #[test]
    fn put_get_and_get_prefix() {
        let server = TestEtcd::start();
        let etcd = server.client();
        let binary = [0u8, 0xff, 0xfe, b'\n', 0x80];
        let rev = ok(etcd.put("p/bin", &binary, 0));
        let (kv, read_rev) = ok(etcd.get("p/bin"));
        let kv = kv.expect("p/bin exists");
        assert_eq!(kv.value, binary);
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.lease),
            (rev, rev, 0)
        );
        assert_eq!(read_rev, rev);
        assert_eq!(ok(etcd.get("p/missing")).0, None);

        for i in 0..1500 {
            ok(etcd.put(&format!("many/{i:04}"), format!("v{i}").as_bytes(), 0));
        }
        ok(etcd.put("many0", b"outside", 0));
        let (kvs, rev) = ok(etcd.get_prefix("many/"));
        assert_eq!(kvs.len(), 1500);
        assert_eq!(kvs[1499].key, "many/1499");
        assert_eq!(kvs[1499].value, b"v1499");
        assert!(kvs.windows(2).all(|w| w[0].key < w[1].key));
        assert!(rev >= kvs[1499].mod_revision);
        assert_eq!(ok(etcd.delete_prefix("many/")), 1500);
        assert!(ok(etcd.get_prefix("many/")).0.is_empty());
        assert!(ok(etcd.delete("many0")));
        assert!(!ok(etcd.delete("many0")));

        let status = ok(etcd.status());
        assert_eq!(status.endpoint, format!("127.0.0.1:{}", server.port));
        assert!(status.version.starts_with("3."), "{status:?}");
        assert_eq!(status.leader, status.member_id);
    }

    #[test]
    fn create_refuses_an_existing_key() {
        let server = TestEtcd::start();
        let etcd = server.client();
        assert!(ok(etcd.create("c", b"1", 0)));
        assert!(!ok(etcd.create("c", b"2", 0)));
        assert_eq!(ok(etcd.get("c")).0.expect("c").value, b"1");
    }

    #[test]
    fn put_if_and_delete_if_compare_the_mod_revision() {
        let server = TestEtcd::start();
        let etcd = server.client();
        assert!(ok(etcd.put_if("k", b"1", 0, 0)));
        assert!(!ok(etcd.put_if("k", b"x", 0, 0)));
        let rev = ok(etcd.get("k")).0.expect("k").mod_revision;
        assert!(!ok(etcd.put_if("k", b"x", rev + 100, 0)));
        assert!(ok(etcd.put_if("k", b"2", rev, 0)));
        let kv = ok(etcd.get("k")).0.expect("k");
        assert_eq!(kv.value, b"2");
        assert!(!ok(etcd.delete_if("k", rev)));
        assert!(ok(etcd.delete_if("k", kv.mod_revision)));
        assert_eq!(ok(etcd.get("k")).0, None);
        assert!(!ok(etcd.delete_if("k", 0)));
    }

    #[test]
    fn lease_keepalive_then_expiry() {
        let server = TestEtcd::start();
        let etcd = server.client();
        let lease = ok(etcd.grant(2));
        ok(etcd.put("leased", b"v", lease));
        assert_eq!(ok(etcd.get("leased")).0.expect("leased").lease, lease);
        for _ in 0..3 {
            thread::sleep(Duration::from_secs(1));
            assert_eq!(ok(etcd.keepalive(lease)), 2);
        }
        assert!(ok(etcd.get("leased")).0.is_some());
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok(etcd.get("leased")).0.is_some() {
            assert!(
                Instant::now() < deadline,
                "the leased key outlived its lease"
            );
            thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(etcd.keepalive(lease), Err(EtcdError::LeaseNotFound));
    }

    #[test]
    fn revoke_deletes_the_keys_and_forgets_the_lease() {
        let server = TestEtcd::start();
        let etcd = server.client();
        let lease = ok(etcd.grant(60));
        ok(etcd.put("r", b"v", lease));
        ok(etcd.revoke(lease));
        assert_eq!(ok(etcd.get("r")).0, None);
        assert_eq!(etcd.revoke(lease), Err(EtcdError::LeaseNotFound));
        assert_eq!(etcd.put("r", b"v", lease), Err(EtcdError::LeaseNotFound));
        assert_eq!(etcd.keepalive(lease), Err(EtcdError::LeaseNotFound));
    }

    #[test]
    fn watch_delivers_puts_and_deletes_in_order_from_a_revision() {
        let server = TestEtcd::start();
        let etcd = server.client();
        ok(etcd.put("w/before", b"0", 0));
        let first = ok(etcd.put("w/a", b"1", 0));
        ok(etcd.put("other", b"x", 0));
        ok(etcd.put("w/b", b"2", 0));
        ok(etcd.delete("w/a"));
        let mut watch = ok(etcd.watch("w/", first));
        let events = collect(&mut watch, 3, T);
        let seen: Vec<_> = events.iter().map(|e| (e.kind, e.kv.key.as_str())).collect();
        assert_eq!(
            seen,
            [
                (EventKind::Put, "w/a"),
                (EventKind::Put, "w/b"),
                (EventKind::Delete, "w/a")
            ]
        );
        assert!(events[2].kv.value.is_empty());
        assert!(events
            .windows(2)
            .all(|w| w[0].kv.mod_revision < w[1].kv.mod_revision));

        let rev = ok(etcd.put("w/c", &[0xff, 0], 0));
        let events = collect(&mut watch, 1, T);
        assert_eq!(events[0].kv.value, [0xff, 0]);
        assert_eq!(events[0].kv.mod_revision, rev);
        assert!(matches!(watch.next(Duration::from_millis(300)), Ok(None)));
    }

    #[test]
    fn watch_from_a_compacted_revision_says_compacted() {
        let server = TestEtcd::start();
        let etcd = server.client();
        let first = ok(etcd.put("cw/a", b"1", 0));
        ok(etcd.put("cw/a", b"2", 0));
        let last = ok(etcd.put("cw/a", b"3", 0));
        ok(etcd.compact(last));
        let mut watch = ok(etcd.watch("cw/", first));
        let deadline = Instant::now() + T;
        loop {
            match watch.next(Duration::from_millis(500)) {
                Err(EtcdError::Compacted { compact_revision }) => {
                    assert_eq!(compact_revision, last);
                    break;
                }
                Ok(_) if Instant::now() < deadline => continue,
                other => panic!("{other:?}"),
            }
        }
        // A read at the newest revision still works.
        assert_eq!(ok(etcd.get_prefix("cw/")).0.len(), 1);
    }

    #[test]
    fn failover_to_the_next_endpoint_and_stay_there() {
        let server = TestEtcd::start();
        let dead = free_port();
        let urls = format!("etcd://127.0.0.1:{dead},127.0.0.1:{}", server.port);
        let etcd = ok(Etcd::new(&urls, T));
        ok(etcd.put("f", b"1", 0));
        assert_eq!(ok(etcd.get("f")).0.expect("f").value, b"1");
        assert_eq!(etcd.preferred.load(Ordering::Relaxed), 1);
        let mut watch = ok(etcd.watch("f", 1));
        assert_eq!(watch.endpoint(), format!("127.0.0.1:{}", server.port));
        assert_eq!(collect(&mut watch, 1, T).len(), 1);
    }

    #[test]
    fn unreachable_lists_every_endpoint() {
        let (a, b) = (free_port(), free_port());
        let etcd = ok(Etcd::new(&format!("127.0.0.1:{a},127.0.0.1:{b}"), T));
        let err = etcd.get("k").expect_err("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, EtcdError::Unreachable(_)), "{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{a}: connection refused")),
            "{text}"
        );
        assert!(
            text.contains(&format!("127.0.0.1:{b}: connection refused")),
            "{text}"
        );
        assert!(matches!(etcd.watch("k", 0), Err(EtcdError::Unreachable(_))));
    }

    #[test]
    fn a_watch_sees_the_server_stop_and_a_restart_serves_again() {
        let mut server = TestEtcd::start();
        let etcd = server.client();
        let rev = ok(etcd.put("s", b"1", 0));
        let mut watch = ok(etcd.watch("s", rev));
        assert_eq!(collect(&mut watch, 1, T).len(), 1);
        server.stop();
        let deadline = Instant::now() + T;
        loop {
            match watch.next(Duration::from_millis(500)) {
                Err(EtcdError::Unreachable(msg)) => {
                    assert!(msg.contains(&server.port.to_string()), "{msg}");
                    break;
                }
                Ok(None) if Instant::now() < deadline => continue,
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(etcd.get("s"), Err(EtcdError::Unreachable(_))));
        server.start_again();
        assert_eq!(ok(etcd.get("s")).0.expect("s kept").value, b"1");
    }
}
