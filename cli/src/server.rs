//! The control API served by `vswitchd`: HTTP/1.1 + JSON on a Unix socket (mode 0600), so
//! `curl --unix-socket /run/vswitchd/vswitchd.sock http://localhost/v1/networks` works too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use switch::capture::{pcap_header, pcap_record};
use switch::model::*;
use switch::{Error, Switch};

use crate::routes;

/// An API error: the switch's error rendered as `{"error": "..."}` with its status.
pub struct ApiError(pub Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response()
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
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let deadline = q
        .timeout
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| Instant::now() + Duration::from_secs_f64(t.min(1e9)));
    let count = q.count.unwrap_or(u64::MAX);
    log::info!("capture on {} started (session {})", q.target, session.id);
    std::thread::Builder::new()
        .name("vs-capture".into())
        .spawn(move || {
            if tx
                .blocking_send(Ok(Bytes::copy_from_slice(&pcap_header())))
                .is_err()
            {
                return;
            }
            let mut sent = 0u64;
            while sent < count {
                let wait = deadline.map_or(Duration::from_millis(200), |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(200))
                });
                match session.frames.recv_timeout(wait) {
                    Ok(first) => {
                        let mut out = Vec::with_capacity(first.data.len() + 16);
                        pcap_record(&first, &mut out);
                        sent += 1;
                        while sent < count {
                            let Ok(more) = session.frames.try_recv() else {
                                break;
                            };
                            pcap_record(&more, &mut out);
                            sent += 1;
                        }
                        if tx.blocking_send(Ok(Bytes::from(out))).is_err() {
                            break;
                        }
                    }
                    // The port went away (detached): nothing more can arrive.
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if tx.is_closed() || deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                    }
                }
            }
            log::info!(
                "capture session {} ended: {sent} frames, {} dropped",
                session.id,
                session.dropped.load(std::sync::atomic::Ordering::Relaxed)
            );
        })
        .map_err(|e| {
            ApiError(Error::Device {
                step: "start capture thread",
                source: e,
            })
        })?;
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")],
        body,
    )
        .into_response())
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

async fn fdb_add(State(sw): State<Sw>, Json(req): Json<FdbAdd>) -> Result<StatusCode, ApiError> {
    blocking(move || sw.fdb_add(&req))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

/// The credentials of the process at the other end of a control connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's user id, when the kernel told it.
    pub uid: Option<u32>,
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// Only root may use the API, whatever the socket's mode has been changed to.
async fn require_root(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uid = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .and_then(|c| c.0.uid);
    if uid == Some(0) {
        return next.run(req).await;
    }
    let who = uid.map_or_else(|| "an unknown user".to_string(), |u| format!("uid {u}"));
    let body = ErrorBody {
        error: format!(
            "permission denied: vswitchd accepts requests from root only (this client is {who})"
        ),
    };
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// The API's routes.
pub fn router(sw: Arc<Switch>) -> Router {
    Router::new()
        .route(routes::NETWORKS, get(network_ls).post(network_create))
        .route(routes::NETWORK, get(network_inspect).delete(network_rm))
        .route(routes::ENDPOINTS, axum::routing::post(attach))
        .route(routes::ENDPOINT, delete(detach))
        .route(routes::PORTS, get(ports))
        .route(routes::FDB, get(fdb).post(fdb_add))
        .route(routes::PEERS, axum::routing::post(peer_add))
        .route(routes::PEER, delete(peer_rm))
        .route(routes::STATS, get(stats))
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
        .layer(axum::middleware::from_fn(require_root))
        .with_state(sw)
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
pub fn listen(path: &Path) -> Result<tokio::net::UnixListener, ListenError> {
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
    tokio::net::UnixListener::from_std(l).map_err(|e| io("register control socket", e))
}
