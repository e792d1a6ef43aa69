//! The control API served by `vswitchd`: HTTP/1.1 + JSON on a Unix socket (mode 0600), so
//! `curl --unix-socket /run/vswitchd/vswitchd.sock http://localhost/v1/networks` works too.
//!
//! What keeps it answering whatever its clients do (see [`Limits`] and [`serve`]): a deadline for
//! each request head and for idle kept-alive connections, a cap on connections below the
//! descriptor limit (closing the longest-idle one, or refusing at once, past it), bodies read
//! whole within the header timeout, captures that cost no thread, and every error as
//! `{"error": "..."}` with its status, also those axum answers by itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use switch::capture::{pcap_header, pcap_record};
use switch::model::*;
use switch::{Error, Switch};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tower::ServiceExt;

use crate::{routes, ApiStatus, StatusInfo, RESTORING_HEADER};

/// An API error: the switch's error rendered as `{"error": "..."}` with its status.
pub struct ApiError(pub Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // One line whatever a request quoted (a name with a newline, say).
        error_response(status, &self.0.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

type Sw = Arc<Switch>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// Run a blocking control operation off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(Error::ShuttingDown))?
        .map_err(ApiError)
}

async fn network_ls(State(sw): State<Sw>) -> Json<Vec<NetworkInfo>> {
    Json(sw.networks())
}

async fn network_create(
    State(sw): State<Sw>,
    Json(req): Json<NetworkCreate>,
) -> ApiResult<NetworkInfo> {
    blocking(move || sw.create_network(&req)).await.map(Json)
}

async fn network_inspect(
    State(sw): State<Sw>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<NetworkInfo> {
    sw.network(&name).map(Json).map_err(ApiError)
}

async fn network_rm(
    State(sw): State<Sw>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || sw.remove_network(&name))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn attach(State(sw): State<Sw>, Json(req): Json<AttachRequest>) -> ApiResult<EndpointInfo> {
    blocking(move || sw.attach(&req)).await.map(Json)
}

async fn detach(
    State(sw): State<Sw>,
    UrlPath((netns, network)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || sw.detach(&netns, &network))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn ports(State(sw): State<Sw>) -> Json<Vec<PortInfo>> {
    Json(sw.ports())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FdbQuery {
    network: Option<String>,
}

async fn fdb(State(sw): State<Sw>, Query(q): Query<FdbQuery>) -> ApiResult<Vec<FdbEntryInfo>> {
    sw.fdb(q.network.as_deref()).map(Json).map_err(ApiError)
}

async fn stats(State(sw): State<Sw>) -> Json<StatsInfo> {
    Json(sw.stats())
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(sw): State<Sw>) -> axum::response::Response {
    match tokio::task::spawn_blocking(move || crate::metrics::render(&sw.metrics())).await {
        Ok(body) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// `?count=N&timeout=SECS` of a followed stream: stop after N lines or SECS seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    count: Option<u64>,
    timeout: Option<f64>,
}

/// `GET /v1/events`: the event stream as JSON lines, for as long as the client reads.
async fn events(State(sw): State<Sw>, Query(q): Query<FollowQuery>) -> Response {
    follow(sw.subscribe(switch::events::Topic::Events), "events", q)
}

/// `GET /v1/flows`: the flow log as JSON lines, for as long as the client reads.
async fn flows(State(sw): State<Sw>, Query(q): Query<FollowQuery>) -> Response {
    follow(sw.subscribe(switch::events::Topic::Flows), "flows", q)
}

/// A subscription as a streamed body of JSON lines: first `{"type":"listening"}` (from then on
/// nothing is missed), then the lines as they come, a `{"type":"lost","count":N}` line when the
/// queue overflowed since the last one. Polled by the connection's own task every 100 ms.
fn follow(sub: switch::events::Subscription, topic: &str, q: FollowQuery) -> Response {
    let first = serde_json::json!({"type": "listening", "topic": topic}).to_string() + "\n";
    let body = Body::from_stream(Lines {
        sub,
        first: Some(first),
        tick: tokio::time::interval(Duration::from_millis(100)),
        sent: 0,
        count: q.count.unwrap_or(u64::MAX),
        deadline: q
            .timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| Box::pin(tokio::time::sleep(Duration::from_secs_f64(t.min(1e9))))),
        lost_told: 0,
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

struct Lines {
    sub: switch::events::Subscription,
    first: Option<String>,
    tick: tokio::time::Interval,
    sent: u64,
    count: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    lost_told: u64,
}

impl tokio_stream::Stream for Lines {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(Bytes::from(f))));
        }
        loop {
            let expired = this
                .deadline
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready());
            if this.sent >= this.count || expired {
                return Poll::Ready(None);
            }
            if this.tick.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            let mut out = String::new();
            let lost = this.sub.lost.load(Ordering::Relaxed);
            if lost > this.lost_told {
                let n = lost - this.lost_told;
                this.lost_told = lost;
                out.push_str(&format!("{{\"type\":\"lost\",\"count\":{n}}}\n"));
            }
            while this.sent < this.count && out.len() < CHUNK_BYTES {
                let Ok(line) = this.sub.rx.try_recv() else {
                    break;
                };
                out.push_str(&line);
                out.push('\n');
                this.sent += 1;
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

/// What `vswitchd --metrics-listen` serves: `GET /metrics` alone (read-only, no root needed:
/// it is a TCP port, loopback unless the operator says otherwise).
pub fn metrics_router(sw: Arc<Switch>) -> Router {
    Router::new()
        .route(routes::METRICS, get(metrics))
        .with_state(sw)
}

/// Connections the metrics listener serves at once; more wait in the kernel's backlog, so
/// connections opened and left idle cannot take the daemon's file descriptors.
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// How long a metrics connection may stay without a request before it is closed (a scraper
/// that keeps connections alive comes back every scrape interval: 15 s by default).
pub const METRICS_IDLE: Duration = Duration::from_secs(120);

/// The metrics listener with a cap on open connections ([`METRICS_MAX_CONNECTIONS`]): `accept`
/// waits for a free place before it takes the next connection, and each connection gives its
/// place back when it closes or has been idle for [`METRICS_IDLE`].
pub struct CappedListener {
    inner: tokio::net::TcpListener,
    places: Arc<tokio::sync::Semaphore>,
}

impl CappedListener {
    /// Cap `inner` at `max` connections.
    pub fn new(inner: tokio::net::TcpListener, max: usize) -> CappedListener {
        CappedListener {
            inner,
            places: Arc::new(tokio::sync::Semaphore::new(max)),
        }
    }
}

/// A connection holding its place under the cap.
pub struct Placed {
    io: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for Placed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + METRICS_IDLE;
                    self.idle.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                // Idle too long: end of stream, and hyper closes the connection.
                Poll::Ready(()) => Poll::Ready(Ok(())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Placed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Placed;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Placed, std::net::SocketAddr) {
        loop {
            let Ok(place) = self.places.clone().acquire_owned().await else {
                // The semaphore is never closed; should it be, stop taking connections.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let idle = Box::pin(tokio::time::sleep(METRICS_IDLE));
                    return (
                        Placed {
                            io,
                            _place: place,
                            idle,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    log::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureQuery {
    target: String,
    count: Option<u64>,
    timeout: Option<f64>,
}

/// Stream pcap for a capture target until `count` frames, `timeout` seconds, or the client goes.
async fn capture(
    State(sw): State<Sw>,
    Query(q): Query<CaptureQuery>,
) -> Result<Response, ApiError> {
    let target = q.target.clone();
    let session = blocking(move || sw.capture(&target)).await?;
    let deadline = q
        .timeout
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| Box::pin(tokio::time::sleep(Duration::from_secs_f64(t.min(1e9)))));
    log::info!("capture on {} started (session {})", q.target, session.id);
    let body = Body::from_stream(Pcap {
        session,
        header_sent: false,
        sent: 0,
        count: q.count.unwrap_or(u64::MAX),
        deadline,
        done: false,
    });
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")],
        body,
    )
        .into_response())
}

/// A capture session as a pcap body: the connection's own task polls it when it can write more,
/// so a session costs no thread, and a client that stops reading stops the polling (the frames
/// then wait in, and past its budget are dropped from, the session's queue). What such a client
/// makes the daemon hold is the session's queue (`capture::SESSION_BYTES`), one chunk of at most
/// [`CHUNK_BYTES`] here and the connection's write buffer.
struct Pcap {
    session: switch::capture::Session,
    header_sent: bool,
    sent: u64,
    count: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

/// The most frame data one chunk of a capture stream carries.
const CHUNK_BYTES: usize = 256 << 10;

impl tokio_stream::Stream for Pcap {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.header_sent {
            this.header_sent = true;
            return Poll::Ready(Some(Ok(Bytes::copy_from_slice(&pcap_header()))));
        }
        let expired = this
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if this.sent >= this.count || expired {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.session.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            // Every tap went away: nothing more can arrive.
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(first)) => {
                let mut out = Vec::with_capacity(first.data.len() + 16);
                pcap_record(&first, &mut out);
                this.sent += 1;
                // Whatever else is queued goes in the same chunk: one write for a burst.
                while this.sent < this.count && out.len() < CHUNK_BYTES {
                    let Ok(more) = this.session.try_recv() else {
                        break;
                    };
                    pcap_record(&more, &mut out);
                    this.sent += 1;
                }
                Poll::Ready(Some(Ok(Bytes::from(out))))
            }
        }
    }
}

impl Drop for Pcap {
    /// The body goes when the stream ends or the client does: either way the session ends here
    /// (dropping it detaches its taps).
    fn drop(&mut self) {
        log::info!(
            "capture session {} ended: {} frames, {} dropped",
            self.session.id,
            self.sent,
            self.session
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

async fn link(
    State(sw): State<Sw>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<LinkRequest>,
) -> Result<StatusCode, ApiError> {
    blocking(move || sw.link(&name, &req.peer, true))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn unlink(
    State(sw): State<Sw>,
    UrlPath((name, peer)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || sw.link(&name, &peer, false))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn cluster_status(State(sw): State<Sw>) -> ApiResult<ClusterInfo> {
    sw.cluster_info().map(Json).map_err(ApiError)
}

async fn uplink_show(State(sw): State<Sw>) -> ApiResult<UplinkInfo> {
    sw.uplink().map(Json).map_err(ApiError)
}

async fn uplink_set(State(sw): State<Sw>, Json(req): Json<UplinkSet>) -> ApiResult<UplinkInfo> {
    blocking(move || sw.set_uplink(&req)).await.map(Json)
}

async fn uplink_rm(State(sw): State<Sw>) -> Result<StatusCode, ApiError> {
    blocking(move || sw.remove_uplink())
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn publish(State(sw): State<Sw>, Json(req): Json<PublishRequest>) -> ApiResult<PublishInfo> {
    blocking(move || sw.publish(&req)).await.map(Json)
}

async fn unpublish(
    State(sw): State<Sw>,
    Json(req): Json<UnpublishRequest>,
) -> Result<StatusCode, ApiError> {
    blocking(move || sw.unpublish(&req))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

async fn conntrack(
    State(sw): State<Sw>,
    Query(q): Query<FdbQuery>,
) -> ApiResult<Vec<ConntrackEntry>> {
    sw.conntrack(q.network.as_deref())
        .map(Json)
        .map_err(ApiError)
}

async fn conntrack_flush(State(sw): State<Sw>, Query(q): Query<FdbQuery>) -> ApiResult<FlushInfo> {
    sw.conntrack_flush(q.network.as_deref())
        .map(Json)
        .map_err(ApiError)
}

async fn peer_add(
    State(sw): State<Sw>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<PeerRequest>,
) -> ApiResult<NetworkInfo> {
    blocking(move || sw.peer(&name, &req.ip, true))
        .await
        .map(Json)
}

async fn peer_rm(
    State(sw): State<Sw>,
    UrlPath((name, ip)): UrlPath<(String, String)>,
) -> ApiResult<NetworkInfo> {
    blocking(move || sw.peer(&name, &ip, false)).await.map(Json)
}

/// `POST /v1/trace`: a dry run of a packet through the datapath (changes nothing, sends
/// nothing).
async fn trace(State(sw): State<Sw>, Json(req): Json<TraceRequest>) -> ApiResult<TraceInfo> {
    blocking(move || sw.trace(&req)).await.map(Json)
}

async fn fdb_add(State(sw): State<Sw>, Json(req): Json<FdbAdd>) -> Result<StatusCode, ApiError> {
    blocking(move || sw.fdb_add(&req))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

/// `GET /v1/status`: whether the daemon is still restoring its saved state, what it holds, and
/// how its API connections fare. Answers at once, also while restoring.
async fn status(
    State(sw): State<Sw>,
    Extension(conns): Extension<Arc<Connections>>,
    Extension(progress): Extension<Progress>,
) -> Json<StatusInfo> {
    let restoring = progress();
    let (restored, total) = restoring.unwrap_or((0, 0));
    let networks = sw.networks();
    Json(StatusInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        restoring: restoring.is_some(),
        restored,
        total,
        networks: networks.len(),
        endpoints: networks.iter().map(|n| n.endpoints.len()).sum(),
        api: conns.status(),
    })
}

/// The credentials of the process at the other end of a control connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's user id, when the kernel told it.
    pub uid: Option<u32>,
}

impl Peer {
    /// The peer of an accepted connection.
    pub fn of(stream: &UnixStream) -> Peer {
        Peer {
            uid: stream.peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// Only root may use the API, whatever the socket's mode has been changed to.
async fn require_root(req: Request, next: Next) -> Response {
    let uid = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.uid);
    if uid == Some(0) {
        return next.run(req).await;
    }
    let who = uid.map_or_else(|| "an unknown user".to_string(), |u| format!("uid {u}"));
    error_response(
        StatusCode::FORBIDDEN,
        &format!(
            "permission denied: vswitchd accepts requests from root only (this client is {who})"
        ),
    )
}

/// `{"error": msg}` with `status`, the message kept to one line.
fn error_response(status: StatusCode, msg: &str) -> Response {
    let error = switch::error::shown(msg.trim());
    (status, Json(ErrorBody { error })).into_response()
}

/// The largest request body the API reads (its bodies are small JSON objects).
pub const MAX_BODY: usize = 1 << 20;

/// Read the request body whole before any handler runs: within the header timeout (a client that
/// sends a head and then trickles or withholds its body would otherwise hold its connection, and
/// a handler, for ever) and up to [`MAX_BODY`].
async fn read_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {} KiB", MAX_BODY >> 10),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    // Why the body could not be read.
    enum Unread {
        TooLarge,
        Failed(axum::Error),
    }
    let read = async {
        let mut data = Vec::new();
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(Unread::Failed)?;
            if data.len() + chunk.len() > MAX_BODY {
                return Err(Unread::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    };
    let data = match tokio::time::timeout(limits.header_timeout, read).await {
        Ok(Ok(data)) => data,
        Ok(Err(Unread::TooLarge)) => return too_large(),
        Ok(Err(Unread::Failed(e))) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("reading the request body failed: {e}"),
            )
        }
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} (--api-header-timeout)",
                    secs(limits.header_timeout)
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, Body::from(data))).await
}

/// Every error as `{"error": "..."}`: the handlers' own errors already are; this turns what axum
/// answers by itself (no such route, a method the route does not take, a body or query its
/// extractors refuse) from plain text or an empty body into the same JSON, keeping the status.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let allowed = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let msg = match status {
        StatusCode::METHOD_NOT_ALLOWED => match allowed {
            Some(a) => format!("method {method} is not allowed on {path} (allowed: {a})"),
            None => format!("method {method} is not allowed on {path}"),
        },
        StatusCode::NOT_FOUND if text.is_empty() => {
            format!("no such API route: {method} {path} (the routes are under /v1/)")
        }
        _ if text.is_empty() => format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        ),
        _ => text,
    };
    let mut out = error_response(status, &msg);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Where the API reads how far the restore of the saved state got: `Some((done, total))` while
/// restoring, `None` after ([`Switch::restoring`]; the unit tests give their own).
pub type Progress = Arc<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// While the daemon restores its saved state, every answer says how far it got
/// ([`RESTORING_HEADER`]: `DONE/TOTAL`): a list read meanwhile may be incomplete.
async fn restoring_header(State(progress): State<Progress>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Some((done, total)) = progress() {
        if let Ok(v) = HeaderValue::from_str(&format!("{done}/{total}")) {
            resp.headers_mut().insert(RESTORING_HEADER, v);
        }
    }
    resp
}

/// The API's routes, with default [`Limits`] (the tests' entry; the daemon uses [`router_with`]).
pub fn router(sw: Arc<Switch>) -> Router {
    router_with(sw, Arc::new(Connections::new(Limits::default())))
}

/// The API's routes, reporting `conns` in `GET /v1/status` and reading bodies within its limits.
pub fn router_with(sw: Arc<Switch>, conns: Arc<Connections>) -> Router {
    let progress: Progress = {
        let sw = sw.clone();
        Arc::new(move || sw.restoring())
    };
    app(sw, conns, progress)
}

fn app(sw: Arc<Switch>, conns: Arc<Connections>, progress: Progress) -> Router {
    let limits = conns.limits;
    let api = Router::new()
        .route(routes::NETWORKS, get(network_ls).post(network_create))
        .route(routes::NETWORK, get(network_inspect).delete(network_rm))
        .route(routes::ENDPOINTS, axum::routing::post(attach))
        .route(routes::ENDPOINT, delete(detach))
        .route(routes::PORTS, get(ports))
        .route(routes::FDB, get(fdb).post(fdb_add))
        .route(routes::PEERS, axum::routing::post(peer_add))
        .route(routes::PEER, delete(peer_rm))
        .route(routes::STATS, get(stats))
        .route(routes::METRICS, get(metrics))
        .route(routes::EVENTS, get(events))
        .route(routes::FLOWS, get(flows))
        .route(routes::STATUS, get(status))
        .route(routes::CLUSTER, get(cluster_status))
        .route(routes::CAPTURE, get(capture))
        .route(routes::LINKS, axum::routing::post(link))
        .route(routes::LINK, delete(unlink))
        .route(
            routes::UPLINK,
            get(uplink_show).put(uplink_set).delete(uplink_rm),
        )
        .route(
            routes::PUBLISH,
            axum::routing::post(publish).delete(unpublish),
        )
        .route(routes::CONNTRACK, get(conntrack).delete(conntrack_flush))
        .route(routes::TRACE, axum::routing::post(trace))
        .layer(Extension(conns))
        .layer(Extension(progress.clone()))
        .layer(middleware::from_fn_with_state(limits, read_body))
        .layer(middleware::from_fn(require_root))
        .with_state(sw);
    // `Router::layer` wraps each route inside its method dispatch, which adds `Allow` to a 405
    // after the layers ran: these two wrap the whole router instead, so they see every answer
    // as it leaves.
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(progress, restoring_header))
        .layer(middleware::from_fn(json_errors))
}

/// `1 s`, `2.5 s`: a duration as a message shows it.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Connections: what keeps the API answering whatever its clients do.
//
// Each connection is a task serving HTTP/1.1 with hyper, watched by the same task: a connection
// with no request in flight has a deadline (the header timeout for a head that is due, the idle
// timeout between requests), a request in flight has none (its body is read within the header
// timeout by `read_body`; a capture streams as long as it likes). The number of connections is
// capped below the descriptor limit: at the cap the longest-idle connection is closed to make
// room, and when every connection is busy a new one is refused at once with a 503, so the daemon
// never runs out of descriptors and an idle flood cannot lock `vswitchctl` out.
// ---------------------------------------------------------------------------------------------

/// Limits that keep the API answering whatever its clients do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a complete request head: from connecting, or on a kept-alive
    /// connection from the first byte of the next request. The request's body gets as long
    /// again.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may sit between requests before it is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// How often at most the refusals and accept errors are logged (one line with the counts).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The API's open connections, and what happened to the ones it closed or refused.
pub struct Connections {
    limits: Limits,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    report: Mutex<Report>,
}

/// Counts not logged yet.
#[derive(Default)]
struct Report {
    last: Option<Instant>,
    refused: u64,
    evicted: u64,
    accept_errors: u64,
    accept_error: String,
}

impl Connections {
    /// No connection yet, with these limits.
    pub fn new(limits: Limits) -> Connections {
        Connections {
            limits,
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            report: Mutex::new(Report::default()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What `GET /v1/status` says of the API.
    pub fn status(&self) -> ApiStatus {
        ApiStatus {
            connections: lock(&self.open).len(),
            max_connections: self.limits.max_connections,
            refused: self.refused.load(Ordering::Relaxed),
            closed_idle: self.evicted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            header_timeout_secs: self.limits.header_timeout.as_secs_f64(),
            idle_timeout_secs: self.limits.idle_timeout.as_secs_f64(),
        }
    }

    /// Register a new connection, closing the longest-idle one when at the cap; `None` when at
    /// the cap with every connection busy (the new one is then refused).
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        // Lock order: `open`, then a connection's state or the report; nothing takes them the
        // other way round.
        let mut open = lock(&self.open);
        if open.len() >= self.limits.max_connections {
            let victim = open
                .iter()
                .filter_map(|(id, c)| {
                    let st = lock(&c.state);
                    (st.in_flight == 0).then_some((st.idle_since, *id))
                })
                .min();
            let Some((_, id)) = victim else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.note(|r| r.refused += 1);
                return None;
            };
            if let Some(c) = open.remove(&id) {
                c.evict();
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.note(|r| r.evicted += 1);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn::new());
        open.insert(id, c.clone());
        Some((id, c))
    }

    fn remove(&self, id: u64) {
        lock(&self.open).remove(&id);
    }

    /// Count something worth a log line, and log the counts when none was logged for
    /// [`REPORT_EVERY`]: a flood makes one line every ten seconds, not one per connection.
    fn note(&self, count: impl FnOnce(&mut Report)) {
        let mut r = lock(&self.report);
        count(&mut r);
        if r.refused + r.evicted + r.accept_errors == 0
            || r.last.is_some_and(|t| t.elapsed() < REPORT_EVERY)
        {
            return;
        }
        let over = r.last.map_or_else(String::new, |t| {
            format!(" in the last {}", secs_whole(t.elapsed()))
        });
        if r.refused + r.evicted > 0 {
            log::warn!(
                "API: at its cap of {} connections (--api-max-connections): closed {} idle \
                 connection(s) to make room and refused {} (every connection busy){over}",
                self.limits.max_connections,
                r.evicted,
                r.refused
            );
        }
        if r.accept_errors > 0 {
            log::warn!(
                "API: accepting a connection failed {} time(s){over}: {}; connections wait in \
                 the socket's backlog",
                r.accept_errors,
                r.accept_error
            );
        }
        *r = Report {
            last: Some(Instant::now()),
            ..Report::default()
        };
    }
}

/// `12 s`: whole seconds, for the log.
fn secs_whole(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

/// A lock that a panic elsewhere does not make unusable (the data here stays consistent: counters
/// and timestamps).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection's state, shared by its task, its reads and its requests.
struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the connection's task: its deadline moved, or it is to close.
    changed: Notify,
    evicted: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct ConnState {
    /// Requests being answered (a response body still being sent counts).
    in_flight: usize,
    /// Requests answered.
    served: u64,
    /// When the connection was accepted or its last request answered.
    idle_since: Instant,
    /// When the first byte of the next request arrived, if it did.
    head_started: Option<Instant>,
}

impl ConnState {
    /// When the connection is to be closed if nothing happens, and for which timeout.
    fn deadline(&self, l: &Limits) -> Option<(Instant, &'static str)> {
        if self.in_flight > 0 {
            return None;
        }
        Some(match self.head_started {
            Some(t) => (t + l.header_timeout, "header"),
            // A new connection owes its first head within the header timeout.
            None if self.served == 0 => (self.idle_since + l.header_timeout, "header"),
            None => (self.idle_since + l.idle_timeout, "idle"),
        })
    }
}

impl Conn {
    fn new() -> Conn {
        Conn {
            state: Mutex::new(ConnState {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    /// Bytes arrived: with no request in flight they start the next head (and its timeout).
    fn bytes_in(&self) {
        let mut st = lock(&self.state);
        if st.in_flight == 0 && st.head_started.is_none() {
            st.head_started = Some(Instant::now());
            drop(st);
            self.changed.notify_one();
        }
    }

    /// A request's head is in: no deadline until it is answered (the guard's drop).
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut st = lock(&self.state);
        st.in_flight += 1;
        st.head_started = None;
        drop(st);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

/// A request being answered, until its response body is sent (or dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
        st.served += 1;
        st.idle_since = Instant::now();
        drop(st);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it is sent: a capture streaming for an
/// hour is not idle.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling its [`Conn`] when bytes arrive.
struct Watched {
    io: UnixStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_in();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serve the API on `listener` until the future is dropped: one task per connection, within
/// `conns`'s limits.
pub async fn serve(listener: UnixListener, app: Router, conns: Arc<Connections>) {
    let mut report = tokio::time::interval(REPORT_EVERY);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            // Log the counts of a flood that stopped (no new event would).
            _ = report.tick() => {
                conns.note(|_| {});
                continue;
            }
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                let out_of_resources = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                conns.note(|r| {
                    r.accept_errors += 1;
                    r.accept_error = e.to_string();
                });
                if out_of_resources {
                    // The connection stays in the backlog; a retry at once would spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Some((id, conn)) = conns.admit() else {
            refuse(&stream, conns.limits.max_connections);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            id,
            conn,
            app.clone(),
            conns.clone(),
        ));
    }
}

/// Answer a connection over the cap with a 503 saying why, in one write that never waits (the
/// socket's buffer is empty), then close it.
fn refuse(stream: &UnixStream, max: usize) {
    let body = serde_json::to_string(&ErrorBody {
        error: format!(
            "vswitchd is serving its maximum of {max} API connections and all are busy \
             (--api-max-connections): try again later"
        ),
    })
    .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
}

async fn serve_connection(
    stream: UnixStream,
    id: u64,
    conn: Arc<Conn>,
    app: Router,
    conns: Arc<Connections>,
) {
    let limits = conns.limits;
    let peer = Peer::of(&stream);
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let in_flight = conn.begin();
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let io = TokioIo::new(Watched {
        io: stream,
        conn: conn.clone(),
    });
    // No hyper timer: the deadlines are kept below, where they know about requests in flight.
    // A request head over 64 KiB is refused (431) rather than buffered.
    let http = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 << 10)
        .serve_connection(io, service);
    tokio::pin!(http);
    loop {
        let deadline = lock(&conn.state).deadline(&limits);
        let expiry = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut http => {
                if let Err(e) = r {
                    log::debug!("API connection {id}: {e}");
                }
                break;
            }
            () = conn.changed.notified() => {
                // Evicted: close now if idle, else when the request in flight is answered.
                if conn.evicted.load(Ordering::Relaxed) && lock(&conn.state).in_flight == 0 {
                    break;
                }
            }
            () = expiry => {
                // The deadline may have moved since the sleep began (a request came in).
                let now = lock(&conn.state).deadline(&limits);
                if let Some((_, which)) = now.filter(|(at, _)| *at <= Instant::now()) {
                    conns.timed_out.fetch_add(1, Ordering::Relaxed);
                    log::debug!("API connection {id}: closed by the {which} timeout");
                    break;
                }
            }
        }
    }
    conns.remove(id);
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon answers on the socket.
    #[error("another vswitchd is already listening on {0}")]
    InUse(PathBuf),
    /// Creating the socket's directory, binding or setting permissions failed.
    #[error("{step} {path} failed: {source}")]
    Io {
        /// The failing step.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Bind the control socket at `path` with mode 0600, replacing a stale socket file.
pub fn listen(path: &Path) -> Result<UnixListener, ListenError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |step, source| ListenError::Io {
        step,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io("remove stale socket", e))?;
    }
    // Create the socket with no group/other permissions from the start (no window at 0755).
    let old = switch::sys::set_umask(0o177);
    let l = std::os::unix::net::UnixListener::bind(path);
    switch::sys::set_umask(old);
    let l = l.map_err(|e| io("bind control socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("chmod control socket", e))?;
    l.set_nonblocking(true)
        .map_err(|e| io("configure control socket", e))?;
    UnixListener::from_std(l).map_err(|e| io("register control socket", e))
}

#[cfg(test)]
mod test {
    //! The API router driven in-process (`tower::ServiceExt::oneshot`) against a switch without
    //! devices: only verbs that need no TAP, namespace or host interface, so no root is needed.
    //! The peer credentials a Unix socket would give are put in each request by hand.

    use axum::http::Method;
    use serde::de::DeserializeOwned;

    use super::*;

    struct Api {
        sw: Arc<Switch>,
        app: Router,
    }

    impl Drop for Api {
        fn drop(&mut self) {
            self.sw.shutdown();
        }
    }

    fn api() -> Api {
        let sw = Switch::start(switch::Options::default()).expect("start switch");
        Api {
            app: router(sw.clone()),
            sw,
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: StatusCode,
        content_type: String,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
    }

    impl Reply {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body as `T`, after checking the status is a success.
        fn json<T: DeserializeOwned>(&self) -> T {
            assert!(self.status.is_success(), "{self:?}: {}", self.text());
            serde_json::from_slice(&self.body).expect("JSON body")
        }

        /// The `{"error": "..."}` body of a failure with `status`: one non-empty line.
        fn error(&self, status: u16) -> String {
            assert_eq!(self.status.as_u16(), status, "{}", self.text());
            assert_eq!(self.content_type, "application/json", "{}", self.text());
            let e: ErrorBody = serde_json::from_slice(&self.body).expect("error body");
            assert_one_line(&e.error);
            e.error
        }
    }

    fn assert_one_line(s: &str) {
        assert!(!s.trim().is_empty(), "empty error");
        assert!(!s.trim().contains('\n'), "more than one line: {s:?}");
    }

    /// Call the API as `peer` (`None`: a connection whose credentials are unknown).
    async fn call_as(
        app: &Router,
        peer: Option<Peer>,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let mut req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        if let Some(p) = peer {
            req.extensions_mut().insert(ConnectInfo(p));
        }
        reply(app, req).await
    }

    /// Send `req` as root.
    async fn send(app: &Router, mut req: Request<Body>) -> Reply {
        req.extensions_mut()
            .insert(ConnectInfo(Peer { uid: Some(0) }));
        reply(app, req).await
    }

    async fn reply(app: &Router, req: Request<Body>) -> Reply {
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec();
        Reply {
            status,
            content_type,
            headers,
            body,
        }
    }

    /// Call the API as root.
    async fn call(app: &Router, method: Method, uri: &str, body: Option<&str>) -> Reply {
        call_as(app, Some(Peer { uid: Some(0) }), method, uri, body).await
    }

    #[tokio::test]
    async fn only_root_may_call() {
        let a = api();
        let r = call_as(&a.app, None, Method::GET, routes::NETWORKS, None).await;
        let e = r.error(403);
        assert!(
            e.contains("root only") && e.contains("an unknown user"),
            "{e}"
        );
        let r = call_as(
            &a.app,
            Some(Peer { uid: Some(1000) }),
            Method::POST,
            routes::NETWORKS,
            Some(r#"{"name":"front","subnet":"10.9.0.0/24"}"#),
        )
        .await;
        assert!(r.error(403).contains("uid 1000"));
        assert!(
            a.sw.networks().is_empty(),
            "refused requests change nothing"
        );
        let r = call(&a.app, Method::GET, routes::NETWORKS, None).await;
        assert!(r.json::<Vec<NetworkInfo>>().is_empty());
    }

    #[tokio::test]
    async fn network_create_ls_inspect_rm_round_trip() {
        let a = api();
        let body = r#"{"name":"front","subnet":"10.9.0.0/24","mtu":1400}"#;
        let created: NetworkInfo = call(&a.app, Method::POST, routes::NETWORKS, Some(body))
            .await
            .json();
        assert_eq!(created.name, "front");
        assert_eq!(created.subnet, "10.9.0.0/24");
        assert_eq!(created.gateway.to_string(), "10.9.0.1");
        assert_eq!(created.mtu, 1400);
        assert!(created.endpoints.is_empty());

        let again = call(&a.app, Method::POST, routes::NETWORKS, Some(body)).await;
        assert!(again.error(409).contains("already exists"));
        let overlap = r#"{"name":"other","subnet":"10.9.0.128/25"}"#;
        let r = call(&a.app, Method::POST, routes::NETWORKS, Some(overlap)).await;
        assert!(r.error(409).contains("overlaps network 'front'"));

        let ls: Vec<NetworkInfo> = call(&a.app, Method::GET, routes::NETWORKS, None)
            .await
            .json();
        assert_eq!(ls, std::slice::from_ref(&created));
        let inspect: NetworkInfo = call(&a.app, Method::GET, "/v1/networks/front", None)
            .await
            .json();
        assert_eq!(inspect, created);

        // The read-only verbs work on it too.
        let fdb: Vec<FdbEntryInfo> = call(&a.app, Method::GET, "/v1/fdb?network=front", None)
            .await
            .json();
        assert!(fdb.is_empty());
        let ct: Vec<ConntrackEntry> =
            call(&a.app, Method::GET, "/v1/conntrack?network=front", None)
                .await
                .json();
        assert!(ct.is_empty());
        let stats: StatsInfo = call(&a.app, Method::GET, routes::STATS, None).await.json();
        assert_eq!(stats.drops.get("malformed"), Some(&0));
        let ports: Vec<PortInfo> = call(&a.app, Method::GET, routes::PORTS, None).await.json();
        assert!(ports.is_empty());

        let r = call(&a.app, Method::DELETE, "/v1/networks/front", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
        let r = call(&a.app, Method::GET, "/v1/networks/front", None).await;
        assert!(r.error(404).contains("'front' not found"));
        let ls: Vec<NetworkInfo> = call(&a.app, Method::GET, routes::NETWORKS, None)
            .await
            .json();
        assert!(ls.is_empty());
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_with_a_one_line_4xx() {
        let a = api();
        // Rejected by the JSON extractor (axum's own answer, made JSON), before any handler.
        for (body, status, mentions) in [
            ("{not json", 400, "JSON"),
            (r#"{"name":"front"}"#, 422, "subnet"),
            (
                r#"{"name":"front","subnet":"10.9.0.0/24","colour":"red"}"#,
                422,
                "colour",
            ),
            (r#"{"name":"front","subnet":24}"#, 422, "subnet"),
        ] {
            let r = call(&a.app, Method::POST, routes::NETWORKS, Some(body)).await;
            let e = r.error(status);
            assert!(e.contains(mentions), "{body}: {e}");
        }
        // A JSON body without its content type.
        let req = Request::builder()
            .method(Method::POST)
            .uri(routes::NETWORKS)
            .body(Body::from(r#"{"name":"front","subnet":"10.9.0.0/24"}"#))
            .expect("request");
        let r = send(&a.app, req).await;
        assert!(r.error(415).contains("Content-Type"));

        // Well-formed JSON the switch refuses: its own one-line error, as JSON.
        for (body, mentions) in [
            (r#"{"name":"front","subnet":"10.9.0.0/33"}"#, "10.9.0.0/33"),
            (
                r#"{"name":"bad name!","subnet":"10.9.0.0/24"}"#,
                "invalid network name",
            ),
            (
                r#"{"name":"front","subnet":"10.9.0.0/24","gateway":"10.8.0.1"}"#,
                "gateway 10.8.0.1",
            ),
            (
                r#"{"name":"front","subnet":"10.9.0.0/24","mtu":20}"#,
                "MTU 20",
            ),
        ] {
            let r = call(&a.app, Method::POST, routes::NETWORKS, Some(body)).await;
            let e = r.error(400);
            assert!(e.contains(mentions), "{body}: {e}");
        }
        assert!(a.sw.networks().is_empty(), "nothing was created");
    }

    #[tokio::test]
    async fn unknown_network_is_a_404_naming_it() {
        let a = api();
        for (method, uri, body) in [
            (Method::GET, "/v1/networks/nope", None),
            (Method::DELETE, "/v1/networks/nope", None),
            (Method::GET, "/v1/fdb?network=nope", None),
            (Method::GET, "/v1/conntrack?network=nope", None),
            (Method::DELETE, "/v1/conntrack?network=nope", None),
            (
                Method::POST,
                "/v1/networks/nope/links",
                Some(r#"{"peer":"x"}"#),
            ),
            (Method::DELETE, "/v1/networks/nope/links/x", None),
            // Attach and detach look the network up before touching any namespace or device.
            (
                Method::POST,
                routes::ENDPOINTS,
                Some(r#"{"netns":"ns1","network":"nope"}"#),
            ),
            (Method::DELETE, "/v1/endpoints/ns1/nope", None),
        ] {
            let r = call(&a.app, method.clone(), uri, body).await;
            let e = r.error(404);
            assert!(e.contains("'nope'"), "{method} {uri}: {e}");
        }
        // A name with a newline in it (URL-encoded) is quoted escaped: the error stays one line.
        let r = call(&a.app, Method::GET, "/v1/networks/a%0Ab", None).await;
        assert!(r.error(404).contains(r"a\nb"));
        let r = call(&a.app, Method::GET, routes::UPLINK, None).await;
        assert!(r.error(404).contains("no uplink"));
        let r = call(&a.app, Method::DELETE, routes::UPLINK, None).await;
        assert!(r.error(404).contains("no uplink"));
        // An unknown query parameter is refused, not ignored.
        let r = call(&a.app, Method::GET, "/v1/fdb?netwrk=front", None).await;
        assert!(r.error(400).contains("netwrk"));
    }

    #[tokio::test]
    async fn capture_on_an_unknown_target_is_refused() {
        let a = api();
        let r = call(&a.app, Method::GET, "/v1/capture?target=nope", None).await;
        assert!(r.error(404).contains("'nope'"));
        let r = call(&a.app, Method::GET, "/v1/capture", None).await;
        assert!(r.error(400).contains("target"), "no target: {}", r.text());

        // A known network with nothing going on: the pcap header alone, then the end.
        a.sw.create_network(&NetworkCreate::flat("front", "10.9.0.0/24"))
            .expect("network");
        let r = call(
            &a.app,
            Method::GET,
            "/v1/capture?target=front&timeout=0",
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type, "application/vnd.tcpdump.pcap");
        assert_eq!(r.body, pcap_header());
    }

    #[tokio::test]
    async fn capture_streams_a_sink_port_as_pcap() {
        let a = api();
        a.sw.create_network(&NetworkCreate::flat("front", "10.9.0.0/24"))
            .expect("network");
        let p =
            a.sw.attach_sink(&AttachRequest::new("a", "front"))
                .expect("sink");
        let q =
            a.sw.attach_sink(&AttachRequest::new("b", "front"))
                .expect("sink");
        let mut req = Request::builder()
            .uri(format!("/v1/capture?target={}&count=1&timeout=10", p.port))
            .body(Body::empty())
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(Peer { uid: Some(0) }));
        // The session exists once the response head is back; then b broadcasts, a gets it.
        let resp = a.app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let qmac: switch::wire::MacAddr = q.mac.parse().expect("mac");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&qmac.0);
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        frame.extend_from_slice(&[0x5a; 46]);
        assert!(a.sw.inject(a.sw.port_id(&q.port).expect("port"), &frame));
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(body[..24], pcap_header());
        let rec = &body[24..];
        assert_eq!(rec.len(), 16 + 60, "one record of the 60-byte frame");
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), 60);
        assert_eq!(rec[16..], frame[12..]);
    }

    #[tokio::test]
    async fn every_error_is_json_with_its_status() {
        let a = api();
        let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY));
        for (method, uri, body, status, mentions) in [
            // No such route, whatever the method: axum's empty 404.
            (Method::GET, "/v1/nope", None, 404, "GET /v1/nope"),
            (Method::POST, "/", Some("{}"), 404, "POST /"),
            (
                Method::GET,
                "/v1/networks/a/b/c",
                None,
                404,
                "/v1/networks/a/b/c",
            ),
            // A route that does not take the method: axum's empty 405.
            (Method::DELETE, routes::STATS, None, 405, "allowed: GET"),
            (Method::PUT, routes::NETWORKS, Some("{}"), 405, "PUT"),
            // The extractors' plain-text refusals: path, query, body.
            (Method::GET, "/v1/networks/%FF", None, 400, "UTF-8"),
            (Method::GET, "/v1/conntrack?network=a&x=1", None, 400, "x"),
            (
                Method::POST,
                routes::NETWORKS,
                Some(r#"{"name":"#),
                400,
                "JSON",
            ),
            (Method::POST, routes::ENDPOINTS, Some("{}"), 422, "netns"),
            // The body limit, before any extractor.
            (
                Method::POST,
                routes::NETWORKS,
                Some(big.as_str()),
                413,
                "larger than",
            ),
        ] {
            let r = call(&a.app, method.clone(), uri, body).await;
            let e = r.error(status);
            assert!(e.contains(mentions), "{method} {uri}: {e}");
        }
        // The 405 keeps its Allow header.
        let r = call(&a.app, Method::DELETE, routes::STATS, None).await;
        assert!(r.headers.contains_key(header::ALLOW), "{:?}", r.headers);
        // A body declared larger than the limit is refused without being read.
        let req = Request::builder()
            .method(Method::POST)
            .uri(routes::NETWORKS)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (MAX_BODY + 1).to_string())
            .body(Body::from_stream(tokio_stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))
            .expect("request");
        assert!(send(&a.app, req).await.error(413).contains("larger than"));
        assert!(a.sw.networks().is_empty(), "nothing was created");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_is_refused_after_the_header_timeout() {
        let sw = Switch::start(switch::Options::default()).expect("start switch");
        let limits = Limits {
            header_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let app = router_with(sw.clone(), Arc::new(Connections::new(limits)));
        let req = Request::builder()
            .method(Method::POST)
            .uri(routes::NETWORKS)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(tokio_stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))
            .expect("request");
        let start = Instant::now();
        let r = send(&app, req).await;
        assert!(r.error(408).contains("0.2 s"), "{}", r.text());
        assert!(start.elapsed() < Duration::from_secs(2));
        sw.shutdown();
    }

    #[tokio::test]
    async fn status_and_the_restoring_header_follow_the_restore() {
        let sw = Switch::start(switch::Options::default()).expect("start switch");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let progress: Progress = {
            let done = done.clone();
            Arc::new(move || (!done.load(Ordering::Relaxed)).then_some((3, 10)))
        };
        let conns = Arc::new(Connections::new(Limits::default()));
        let app = app(sw.clone(), conns, progress);

        // While restoring: reads answer at once, saying how far the restore got.
        let r = call(&app, Method::GET, routes::NETWORKS, None).await;
        assert!(r.json::<Vec<NetworkInfo>>().is_empty());
        assert_eq!(
            r.headers.get(RESTORING_HEADER).map(|v| v.as_bytes()),
            Some(&b"3/10"[..])
        );
        let st: StatusInfo = call(&app, Method::GET, routes::STATUS, None).await.json();
        assert!(st.restoring);
        assert_eq!((st.restored, st.total), (3, 10));
        // Errors carry it too.
        let r = call(&app, Method::GET, "/v1/networks/nope", None).await;
        assert!(r.headers.contains_key(RESTORING_HEADER));
        r.error(404);

        done.store(true, Ordering::Relaxed);
        let r = call(&app, Method::GET, routes::NETWORKS, None).await;
        assert!(!r.headers.contains_key(RESTORING_HEADER), "{:?}", r.headers);
        let st: StatusInfo = call(&app, Method::GET, routes::STATUS, None).await.json();
        assert!(!st.restoring);
        assert_eq!((st.restored, st.total), (0, 0));
        assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(st.api.max_connections, Limits::default().max_connections);
        sw.shutdown();
    }

    #[test]
    fn restoring_refusals_are_503_on_one_line() {
        let e = Error::Restoring {
            done: 12,
            total: 300,
        };
        assert_eq!(e.status(), 503);
        let msg = e.to_string();
        assert!(msg.contains("12 of 300"), "{msg}");
        assert_one_line(&msg);
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let l = Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        };
        let t0 = Instant::now();
        let mut st = ConnState {
            in_flight: 0,
            served: 0,
            idle_since: t0,
            head_started: None,
        };
        // New: the first head is due within the header timeout, bytes or not.
        assert_eq!(st.deadline(&l), Some((t0 + l.header_timeout, "header")));
        st.in_flight = 1;
        assert_eq!(st.deadline(&l), None, "a request in flight has no deadline");
        st.in_flight = 0;
        st.served = 1;
        assert_eq!(st.deadline(&l), Some((t0 + l.idle_timeout, "idle")));
        let t1 = t0 + Duration::from_secs(30);
        st.head_started = Some(t1);
        assert_eq!(st.deadline(&l), Some((t1 + l.header_timeout, "header")));
    }

    #[test]
    fn at_the_cap_the_longest_idle_goes_and_when_all_are_busy_the_new_one_is_refused() {
        let conns = Connections::new(Limits {
            max_connections: 2,
            ..Limits::default()
        });
        let (_, old) = conns.admit().expect("room");
        std::thread::sleep(Duration::from_millis(2));
        let (_, busy) = conns.admit().expect("room");
        let _request = busy.begin();
        let (_, new) = conns.admit().expect("the idle one makes room");
        assert!(
            old.evicted.load(Ordering::Relaxed),
            "the idle one was closed"
        );
        assert!(!busy.evicted.load(Ordering::Relaxed), "not the busy one");
        let _other = new.begin();
        assert!(conns.admit().is_none(), "every connection busy: refused");
        let st = conns.status();
        assert_eq!((st.connections, st.refused, st.closed_idle), (2, 1, 1));
    }
}
