//! vswitch's command line: the daemon's HTTP/JSON control API ([`server`]) served on a Unix
//! socket, and the client ([`client`]) that `vswitchctl` uses. Both sides share the request and
//! response types of [`switch::model`] and the routes below.

pub mod client;
pub mod cni;
pub mod docker;
pub mod docker_ipam;
pub mod metrics;
pub mod netns_mount;
pub mod pcap;
pub mod saved;
pub mod server;
pub mod table;
pub mod top;

/// Default control socket, unless `--socket` or `VSWITCH_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitchd/vswitchd.sock";
/// Environment variable that sets the default socket for both binaries.
pub const SOCKET_ENV: &str = "VSWITCH_SOCKET";

/// Response header present on every answer while vswitchd is still restoring its saved state:
/// `DONE/TOTAL`. A list read meanwhile shows what is restored so far.
pub const RESTORING_HEADER: &str = "x-vswitch-restoring";

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusInfo {
    /// vswitchd's version.
    pub version: String,
    /// Whether the saved state is still being restored (changes are refused with 503 meanwhile).
    pub restoring: bool,
    /// While restoring: what of the saved state is restored so far (0 once done).
    pub restored: usize,
    /// While restoring: what the saved state holds (0 once done).
    pub total: usize,
    /// Networks.
    pub networks: usize,
    /// Endpoints, all networks together.
    pub endpoints: usize,
    /// The API's connections.
    pub api: ApiStatus,
}

/// The API's connections and limits, in [`StatusInfo`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiStatus {
    /// Connections open now.
    pub connections: usize,
    /// Most connections open at once (`--api-max-connections`, at most half the descriptor
    /// limit).
    pub max_connections: usize,
    /// Connections refused since start: over the cap with every connection busy.
    pub refused: u64,
    /// Idle connections closed since start to make room for new ones at the cap.
    pub closed_idle: u64,
    /// Connections closed since start by the header or idle timeout.
    pub timed_out: u64,
    /// `--api-header-timeout`.
    pub header_timeout_secs: f64,
    /// `--api-idle-timeout`.
    pub idle_timeout_secs: f64,
}

/// API routes (HTTP/1.1, JSON bodies; errors are `{"error": "..."}` with a 4xx/5xx status).
pub mod routes {
    /// `GET`: the Prometheus text exposition of the counters and table sizes.
    pub const METRICS: &str = "/metrics";
    /// `GET`: the event stream, JSON lines (`?count=N&timeout=SECS`).
    pub const EVENTS: &str = "/v1/events";
    /// `GET`: the flow log, JSON lines (`?count=N&timeout=SECS`).
    pub const FLOWS: &str = "/v1/flows";
    /// `GET` list, `POST` create ([`switch::model::NetworkCreate`]).
    pub const NETWORKS: &str = "/v1/networks";
    /// `GET` inspect, `DELETE` remove: `/v1/networks/{name}`.
    pub const NETWORK: &str = "/v1/networks/{name}";
    /// `POST` attach ([`switch::model::AttachRequest`]).
    pub const ENDPOINTS: &str = "/v1/endpoints";
    /// `DELETE` detach: `/v1/endpoints/{netns}/{network}`.
    pub const ENDPOINT: &str = "/v1/endpoints/{netns}/{network}";
    /// `GET` ports.
    pub const PORTS: &str = "/v1/ports";
    /// `GET` learned MACs, `?network=NAME` to filter; `POST` a static remote entry
    /// ([`switch::model::FdbAdd`]).
    pub const FDB: &str = "/v1/fdb";
    /// `GET` counters.
    pub const STATS: &str = "/v1/stats";
    /// `GET` the daemon's status ([`crate::StatusInfo`]): restoring or not, the API's
    /// connections.
    pub const STATUS: &str = "/v1/status";
    /// GET: cluster mode's connection, revision and nodes.
    pub const CLUSTER: &str = "/v1/cluster";
    /// `GET` a pcap stream: `?target=T[&count=N][&timeout=SECONDS]`.
    pub const CAPTURE: &str = "/v1/capture";
    /// `POST` link ([`switch::model::LinkRequest`]): `/v1/networks/{name}/links`.
    pub const LINKS: &str = "/v1/networks/{name}/links";
    /// `DELETE` unlink: `/v1/networks/{name}/links/{peer}`.
    pub const LINK: &str = "/v1/networks/{name}/links/{peer}";
    /// `GET` show, `PUT` set ([`switch::model::UplinkSet`]), `DELETE` remove.
    pub const UPLINK: &str = "/v1/uplink";
    /// `POST` publish ([`switch::model::PublishRequest`]), `DELETE` unpublish
    /// ([`switch::model::UnpublishRequest`] body).
    pub const PUBLISH: &str = "/v1/publish";
    /// `POST` add a peer ([`switch::model::PeerRequest`]): `/v1/networks/{name}/peers`.
    pub const PEERS: &str = "/v1/networks/{name}/peers";
    /// `DELETE` remove a peer: `/v1/networks/{name}/peers/{ip}`.
    pub const PEER: &str = "/v1/networks/{name}/peers/{ip}";
    /// `GET` tracked connections, `DELETE` flush; `?network=NAME` to filter.
    pub const CONNTRACK: &str = "/v1/conntrack";
    /// `POST` a packet trace ([`switch::model::TraceRequest`]): a dry run that changes nothing.
    pub const TRACE: &str = "/v1/trace";
}
