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
                // One line whatever a request quoted (a name with a newline, say).
                error: switch::error::shown(&self.0.to_string()),
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
    // What a client that does not read can make the daemon hold: the session's own queue
    // (capture::SESSION_BYTES) plus CHUNKS chunks of at most CHUNK_BYTES here.
    const CHUNKS: usize = 4;
    const CHUNK_BYTES: usize = 256 << 10;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS);
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
                match session.recv_timeout(wait) {
                    Ok(first) => {
                        let mut out = Vec::with_capacity(first.data.len() + 16);
                        pcap_record(&first, &mut out);
                        sent += 1;
                        while sent < count && out.len() < CHUNK_BYTES {
                            let Ok(more) = session.try_recv() else {
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

#[cfg(test)]
mod test {
    //! The API router driven in-process (`tower::ServiceExt::oneshot`) against a switch without
    //! devices: only verbs that need no TAP, namespace or host interface, so no root is needed.
    //! The peer credentials a Unix socket would give are put in each request by hand.

    use axum::extract::ConnectInfo;
    use axum::http::{Method, Request};
    use serde::de::DeserializeOwned;
    use tower::ServiceExt;

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
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
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
        // Rejected by the JSON extractor (axum's own plain-text answer), before any handler.
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
            assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
            assert_one_line(&r.text());
            assert!(r.text().contains(mentions), "{body}: {}", r.text());
        }
        // A JSON body without its content type.
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(routes::NETWORKS)
            .body(Body::from(r#"{"name":"front","subnet":"10.9.0.0/24"}"#))
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(Peer { uid: Some(0) }));
        let r = a.app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

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
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert_one_line(&r.text());
    }

    #[tokio::test]
    async fn capture_on_an_unknown_target_is_refused() {
        let a = api();
        let r = call(&a.app, Method::GET, "/v1/capture?target=nope", None).await;
        assert!(r.error(404).contains("'nope'"));
        let r = call(&a.app, Method::GET, "/v1/capture", None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "no target: {}", r.text());
        assert_one_line(&r.text());

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
}
