//! Docker's remote network driver (libnetwork's plugin protocol), served by vswitchd with
//! `--docker-plugin [PATH]` on `/run/docker/plugins/NAME.sock`, where dockerd finds it as driver
//! `NAME`: `docker network create -d vswitch --subnet ... NET`, `docker run --net NET`.
//!
//! - `CreateNetwork` makes a vswitch network `d-ID12` (the first 12 characters of Docker's
//!   network id) with the pool and gateway Docker's IPAM chose; `-o vni=N` (with `-o
//!   peer=IP,IP`), `-o mtu=N`, `-o icc=false` and `--internal` as for `vswitchctl network
//!   create`. `DeleteNetwork` removes it.
//! - `-o network=NAME` makes the Docker network the vswitch network `NAME` instead: an existing
//!   one (its subnet and gateway must be Docker's pool and gateway), or one made with that name
//!   (in cluster mode an overlay, so a cluster network: the same `-o network=NAME` on every
//!   host's dockerd joins one network). The mapping is saved in `docker-networks.json`;
//!   `DeleteNetwork` forgets it and leaves the vswitch network, which other hosts or
//!   `vswitchctl` endpoints may use (`vswitchctl network rm` removes it).
//! - `GetCapabilities` answers local scope (Docker keeps its network objects per host; a
//!   global data scope would need swarm) and, in cluster mode, global connectivity scope.
//! - `CreateEndpoint` remembers the address Docker's IPAM gave and answers the MAC
//!   (`02:42:` + the address, as Docker's own bridge does).
//! - `Join` bind-mounts the container's namespace (`SandboxKey`) at `/run/netns/vsd-EP12` and
//!   attaches it with a hand-over device: a TAP made in vswitchd's namespace (`vsdEP8`) that
//!   Docker moves into the container, renames `ethN` and configures; vswitchd follows the
//!   rename and saves it. `Leave` detaches (the device goes); `DeleteEndpoint` removes the mount.
//!
//! - The IPAM driver of the same name (`--ipam-driver`) is `crate::docker_ipam`'s pools,
//!   answered by the `IpamDriver.*` routes here.
//!
//! Every error is `{"Err": "one line"}` (`{"Error": ...}` for the IPAM calls, as that protocol
//! names it), as Docker shows plugin errors to its user.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use switch::model::{AttachRequest, NetworkCreate};
use switch::Switch;

use crate::docker_ipam::{Elsewhere, Ipam};
use crate::saved::Saved;

/// The file the `-o network=NAME` mappings are kept in, in vswitchd's state directory.
pub const NETWORKS_FILE: &str = "docker-networks.json";

/// Where dockerd looks for plugin sockets; the file name (without `.sock`) is the driver name.
pub const DEFAULT_PLUGIN_SOCKET: &str = "/run/docker/plugins/vswitch.sock";

/// What the plugin keeps between calls: the address Docker gave each endpoint (from
/// `CreateEndpoint` to `Join`), the vswitch networks Docker networks were mapped to with `-o
/// network=NAME` (by Docker network id), and the IPAM driver's pools.
pub struct Plugin {
    endpoints: Mutex<HashMap<String, (Ipv4Addr, Option<Ipv6Addr>)>>,
    named: Saved<BTreeMap<String, Named>>,
    ipam: Ipam,
}

/// A Docker network made with `-o network=NAME`: the vswitch network, and whether the plugin
/// made it (else it existed: another host's cluster network, or one made with vswitchctl).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct Named {
    network: String,
    made: bool,
}

impl Plugin {
    /// The vswitch network of Docker network `id`: the one named at create, else `d-ID12`.
    fn network_of(&self, id: &str) -> String {
        self.named
            .read(|m| m.get(id).map(|n| n.network.clone()))
            .unwrap_or_else(|| network_name(id))
    }
}

type St = (Arc<Switch>, Arc<Plugin>);

/// The plugin's routes: the network driver and the IPAM driver. The IPAM driver's pools are
/// kept in `state_dir` (an error when what is there cannot be read).
pub fn router(sw: Arc<Switch>, state_dir: Option<&Path>) -> Result<Router, String> {
    let plugin = Plugin {
        endpoints: Mutex::default(),
        named: Saved::load(state_dir, NETWORKS_FILE, "vswitch Docker networks")?,
        ipam: crate::docker_ipam::load(state_dir)?,
    };
    Ok(Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route("/NetworkDriver.DiscoverNew", post(nothing))
        .route("/NetworkDriver.DiscoverDelete", post(nothing))
        .route(
            "/NetworkDriver.ProgramExternalConnectivity",
            post(program_external),
        )
        .route("/NetworkDriver.RevokeExternalConnectivity", post(nothing))
        .route("/IpamDriver.GetCapabilities", post(ipam_capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
        .with_state((sw, Arc::new(plugin))))
}

fn err(msg: impl std::fmt::Display) -> Json<Value> {
    Json(json!({ "Err": msg.to_string() }))
}

/// Run a blocking switch verb off the async threads and answer with its outcome: `{}` (or the
/// value it gave) when it succeeded or `ok_anyway` says the failure is nothing to report,
/// `{"Err": ...}` otherwise.
async fn answer<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ok_anyway: impl Fn(&E) -> bool,
) -> Json<Value>
where
    T: Into<Answer> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v.into().0),
        Ok(Err(e)) if ok_anyway(&e) => Json(json!({})),
        Ok(Err(e)) => err(e),
        Err(_) => err("vswitch plugin: internal error"),
    }
}

/// A plugin answer's body: `{}` for a verb that returns nothing to Docker.
struct Answer(Value);

impl From<()> for Answer {
    fn from((): ()) -> Answer {
        Answer(json!({}))
    }
}

impl From<Value> for Answer {
    fn from(v: Value) -> Answer {
        Answer(v)
    }
}

impl From<switch::model::NetworkInfo> for Answer {
    fn from(_: switch::model::NetworkInfo) -> Answer {
        Answer(json!({}))
    }
}

/// No failure is ignored.
fn never<E>(_: &E) -> bool {
    false
}

/// The body as JSON (Docker sends `application/vnd.docker.plugins.v1.2+json`, which axum's
/// `Json` extractor refuses).
fn body<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, Json<Value>> {
    serde_json::from_slice(b).map_err(|e| err(format!("vswitch plugin: bad request: {e}")))
}

async fn activate() -> Json<Value> {
    Json(json!({ "Implements": ["NetworkDriver", "IpamDriver"] }))
}

async fn capabilities(State((sw, _)): State<St>) -> Json<Value> {
    let reach = if sw.cluster().is_some() {
        "global"
    } else {
        "local"
    };
    Json(json!({ "Scope": "local", "ConnectivityScope": reach }))
}

async fn nothing() -> Json<Value> {
    Json(json!({}))
}

async fn oper_info() -> Json<Value> {
    Json(json!({ "Value": {} }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: HashMap<String, Value>,
    #[serde(default, rename = "IPv4Data")]
    ipv4_data: Vec<IpData>,
    /// `--ipv6 --subnet fd00::/64`: the network is dual stack.
    #[serde(default, rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpData>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpData {
    pool: String,
    #[serde(default)]
    gateway: Option<String>,
}

/// The vswitch network of Docker network `id` (Docker sends only the id, never the name).
fn network_name(id: &str) -> String {
    format!("d-{}", short(id, 12))
}

/// The first `n` letters and digits of a Docker id (ids are hex; anything else is dropped, so
/// no id can make a name vswitchd refuses or cut a character in two).
fn short(id: &str, n: usize) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(n)
        .collect()
}

async fn create_network(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: CreateNetworkReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(v4) = req.ipv4_data.first() else {
        return err("vswitch plugin: the network needs an IPv4 subnet (--subnet)");
    };
    let generic = req
        .options
        .get("com.docker.network.generic")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let opt = |k: &str| generic.get(k).and_then(|v| v.as_str().map(str::to_string));
    let mut create = NetworkCreate::flat(&network_name(&req.network_id), &v4.pool);
    create.gateway = v4
        .gateway
        .as_deref()
        .map(|g| g.split('/').next().unwrap_or(g).to_string());
    if let Some(v6) = req.ipv6_data.as_ref().and_then(|d| d.first()) {
        create.subnet6 = Some(v6.pool.clone());
        create.gateway6 = v6
            .gateway
            .as_deref()
            .map(|g| g.split('/').next().unwrap_or(g).to_string());
    }
    create.internal = req
        .options
        .get("com.docker.network.internal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(v) = opt("vni") {
        match v.parse() {
            Ok(n) => create.vni = Some(n),
            Err(_) => return err(format!("vswitch plugin: -o vni={v} is not a number")),
        }
    }
    if let Some(m) = opt("mtu") {
        match m.parse() {
            Ok(n) => create.mtu = Some(n),
            Err(_) => return err(format!("vswitch plugin: -o mtu={m} is not a number")),
        }
    }
    if let Some(p) = opt("peer") {
        create.peers = p.split(',').map(str::to_string).collect();
    }
    if let Some(icc) = opt("icc") {
        create.icc = Some(icc != "false");
    }
    let Some(name) = opt("network") else {
        return answer(move || sw.create_network(&create), never).await;
    };
    let id = req.network_id.clone();
    answer(
        move || -> Result<(), String> {
            let made = match sw.network(&name) {
                Ok(n) => {
                    same_network(&n, &create)?;
                    false
                }
                Err(switch::error::Error::NetworkNotFound(_)) => {
                    create.name.clone_from(&name);
                    // In cluster mode a named network is a cluster network: an overlay.
                    create.overlay = sw.cluster().is_some() && create.vni.is_none();
                    sw.create_network(&create).map_err(|e| e.to_string())?;
                    true
                }
                Err(e) => return Err(e.to_string()),
            };
            p.named
                .change(|m| {
                    let named = Named {
                        network: name.clone(),
                        made,
                    };
                    m.insert(id, named);
                    Ok(())
                })
                .inspect_err(|_| {
                    if made {
                        let _ = sw.remove_network(&name);
                    }
                })
        },
        never,
    )
    .await
}

/// `-o network=NAME` of a vswitch network that exists: Docker's pool and gateway must be its,
/// and what Docker asks of it (`--internal`, `-o icc/mtu/vni`) must be what it is.
fn same_network(n: &switch::model::NetworkInfo, want: &NetworkCreate) -> Result<(), String> {
    let differs = |what: &str, is: String, asked: String| {
        Err(format!(
            "vswitch plugin: vswitch network {} has {what} {is}, not {asked}: create the Docker \
             network to match it",
            n.name
        ))
    };
    if want.internal != n.internal {
        return differs(
            "internal",
            n.internal.to_string(),
            want.internal.to_string(),
        );
    }
    if let Some(icc) = want.icc.filter(|i| *i != n.icc) {
        return differs("icc", n.icc.to_string(), icc.to_string());
    }
    if let Some(mtu) = want.mtu.filter(|m| *m != n.mtu) {
        return differs("mtu", n.mtu.to_string(), mtu.to_string());
    }
    if let Some(vni) = want.vni.filter(|v| Some(*v) != n.vni) {
        let is = n.vni.map_or_else(|| "none".to_string(), |v| v.to_string());
        return differs("vni", is, vni.to_string());
    }
    let subnet = |s: &str| s.parse::<switch::ipam::Ipv4Cidr>().ok();
    let gateway_differs = want
        .gateway
        .as_deref()
        .is_some_and(|g| g != n.gateway.to_string());
    if subnet(&n.subnet) != subnet(&want.subnet) || gateway_differs {
        return Err(format!(
            "vswitch plugin: vswitch network {} is {} with gateway {}, not {}{}: give \
             --subnet {} --gateway {} (or --ipam-driver vswitch)",
            n.name,
            n.subnet,
            n.gateway,
            want.subnet,
            want.gateway
                .as_deref()
                .map(|g| format!(" with gateway {g}"))
                .unwrap_or_default(),
            n.subnet,
            n.gateway
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

async fn delete_network(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: NetworkReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(named) = p.named.read(|m| m.get(&req.network_id).cloned()) {
        // A network the plugin made goes with it, unless it is a cluster network (other hosts
        // may use it); one that existed stays. The mapping goes.
        let id = req.network_id;
        return answer(
            move || -> Result<(), String> {
                if named.made && sw.cluster().is_none() {
                    match sw.remove_network(&named.network) {
                        Ok(()) | Err(switch::error::Error::NetworkNotFound(_)) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                p.named.change(|m| {
                    m.remove(&id);
                    Ok(())
                })
            },
            never,
        )
        .await;
    }
    let name = network_name(&req.network_id);
    answer(
        move || sw.remove_network(&name),
        |e| matches!(e, switch::error::Error::NetworkNotFound(_)),
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<InterfaceReq>,
    #[serde(default)]
    sandbox_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InterfaceReq {
    #[serde(default)]
    address: String,
    #[serde(default, rename = "AddressIPv6")]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

/// The namespace name an endpoint's container namespace is mounted at.
fn netns_of(endpoint: &str) -> String {
    format!("vsd-{}", short(endpoint, 12))
}

/// The name of the device handed over to Docker (in vswitchd's namespace until moved).
fn handoff_name(endpoint: &str) -> String {
    format!("vsd{}", short(endpoint, 8))
}

async fn create_endpoint(State((_, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: EndpointReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(i) = req.interface else {
        return err("vswitch plugin: no interface address from Docker's IPAM");
    };
    let Some(ip) = i
        .address
        .split('/')
        .next()
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
    else {
        return err(format!(
            "vswitch plugin: endpoint address '{}' is not IPv4",
            i.address
        ));
    };
    let ip6 = match i.address_ipv6.split('/').next().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match a.parse::<Ipv6Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                return err(format!(
                    "vswitch plugin: endpoint IPv6 address '{}' is not IPv6",
                    i.address_ipv6
                ))
            }
        },
    };
    p.endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(req.endpoint_id.clone(), (ip, ip6));
    if i.mac_address.is_empty() {
        let o = ip.octets();
        let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        return Json(json!({ "Interface": { "MacAddress": mac } }));
    }
    Json(json!({}))
}

async fn join(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: EndpointReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(key) = req.sandbox_key.clone() else {
        return err("vswitch plugin: Join without a SandboxKey");
    };
    let Some((ip, ip6)) = p
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&req.endpoint_id)
        .copied()
    else {
        // Attaching with an address of the switch's choosing would leave Docker and the switch
        // disagreeing: refused, and Docker's next start of the container asks again.
        return err(format!(
            "vswitch plugin: endpoint {} was not created here (vswitchd restarted between \
             CreateEndpoint and Join?): start the container again",
            short(&req.endpoint_id, 12)
        ));
    };
    let network = p.network_of(&req.network_id);
    let netns = netns_of(&req.endpoint_id);
    let dev = handoff_name(&req.endpoint_id);
    answer(
        move || -> Result<Value, String> {
            let attach = AttachRequest {
                ip: Some(ip.to_string()),
                ip6: ip6.map(|i| i.to_string()),
                ifname: Some(dev.clone()),
                handoff: true,
                ..AttachRequest::new(&netns, &network)
            };
            sw.attach(&attach).map_err(|e| e.to_string())?;
            let n = sw.network(&network).map_err(|e| e.to_string())?;
            // The container's namespace exists only once Docker starts it (after this answer):
            // mounted under the endpoint's name as soon as it does.
            let bind = (sw.clone(), key, netns.clone(), network.clone());
            std::thread::spawn(move || bind_when_ready(bind));
            let mut answer = json!({
                "InterfaceName": { "SrcName": dev, "DstPrefix": "eth" },
                "Gateway": n.gateway.to_string(),
            });
            if let (Some(g6), Some(_)) = (n.gateway6, ip6) {
                answer["GatewayIPv6"] = json!(g6.to_string());
            }
            Ok(answer)
        },
        never,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExternalReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    options: HashMap<String, Value>,
}

/// One `docker run -p` binding.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    /// IP protocol number (6 TCP, 17 UDP).
    proto: u8,
    /// Container port.
    port: u16,
    #[serde(default, rename = "HostIP")]
    host_ip: String,
    #[serde(default)]
    host_port: u16,
}

/// `docker run -p HOST:CTR`: published on the uplink (the bindings go with the endpoint at
/// Leave, so Revoke has nothing to do).
async fn program_external(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: ExternalReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let bindings: Vec<PortBinding> = match req.options.get("com.docker.network.portmap") {
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(b) => b,
            Err(e) => return err(format!("vswitch plugin: bad port map: {e}")),
        },
        None => return Json(json!({})),
    };
    let network = p.network_of(&req.network_id);
    let netns = netns_of(&req.endpoint_id);
    answer(
        move || -> Result<(), String> {
            // "" and "0.0.0.0" publish on both families (the uplink's two addresses); "::"
            // beside them adds nothing, alone it publishes IPv6 only.
            let both = |b: &PortBinding| {
                bindings.iter().any(|o| {
                    matches!(o.host_ip.as_str(), "" | "0.0.0.0")
                        && (o.proto, o.host_port, o.port) == (b.proto, b.host_port, b.port)
                })
            };
            for b in &bindings {
                let proto = match b.proto {
                    6 => "tcp",
                    17 => "udp",
                    p => return Err(format!("vswitch plugin: cannot publish IP protocol {p}")),
                };
                let host = match b.host_ip.as_str() {
                    "" | "0.0.0.0" => String::new(),
                    "::" if both(b) => continue,
                    "::" => "[::]:".to_string(),
                    // A specific IPv6 address: publishing is on the uplink's one only; skipped.
                    ip if ip.contains(':') => continue,
                    ip => format!("{ip}:"),
                };
                let spec = if b.host_port == 0 {
                    format!("{host}{}/{proto}", b.port)
                } else {
                    format!("{host}{}:{}/{proto}", b.host_port, b.port)
                };
                sw.publish(&switch::model::PublishRequest {
                    netns: netns.clone(),
                    spec,
                    network: Some(network.clone()),
                })
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        never,
    )
    .await
}

async fn leave(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: EndpointReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let network = p.network_of(&req.network_id);
    let netns = netns_of(&req.endpoint_id);
    // Nothing left to remove is no error.
    answer(
        move || sw.detach(&netns, &network),
        |e| {
            matches!(
                e,
                switch::error::Error::NotAttached { .. } | switch::error::Error::NetworkNotFound(_)
            )
        },
    )
    .await
}

async fn delete_endpoint(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: EndpointReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return e,
    };
    p.endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&req.endpoint_id);
    let network = p.network_of(&req.network_id);
    let netns = netns_of(&req.endpoint_id);
    answer(
        move || -> Result<(), String> {
            let _ = sw.detach(&netns, &network);
            crate::netns_mount::unbind(&netns);
            Ok(())
        },
        never,
    )
    .await
}

async fn ipam_capabilities() -> Json<Value> {
    Json(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
}

async fn address_spaces() -> Json<Value> {
    Json(json!({
        "LocalDefaultAddressSpace": crate::docker_ipam::LOCAL_SPACE,
        "GlobalDefaultAddressSpace": crate::docker_ipam::GLOBAL_SPACE,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolReq {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(default, rename = "V6")]
    v6: bool,
}

async fn request_pool(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: PoolReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return ipam_answer(e),
    };
    ipam_answer(
        answer(
            move || {
                let nets = sw.networks();
                let other = Elsewhere {
                    joinable: nets
                        .iter()
                        .filter(|n| n.vni.is_some())
                        .filter_map(|n| n.subnet.parse().ok())
                        .collect(),
                    networks: nets
                        .into_iter()
                        .filter_map(|n| Some((n.name, n.subnet.parse().ok()?)))
                        .collect(),
                    routes: crate::docker_ipam::kernel_routes(),
                };
                let (id, pool) = p
                    .ipam
                    .change(|b| b.request_pool(&req.pool, &req.sub_pool, req.v6, &other))?;
                Ok::<_, String>(json!({ "PoolID": id, "Pool": pool.to_string(), "Data": {} }))
            },
            never,
        )
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressReq {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    /// Docker sends `null` for none.
    #[serde(default)]
    options: Option<HashMap<String, String>>,
}

/// The IPAM protocol names its error field `Error` (the network driver's is `Err`).
fn ipam_answer(Json(mut v): Json<Value>) -> Json<Value> {
    if let Some(e) = v.as_object_mut().and_then(|o| o.remove("Err")) {
        return Json(json!({ "Error": e }));
    }
    Json(v)
}

/// `ReleasePool` and `ReleaseAddress`: nothing to answer, and releasing what is not held is no
/// error.
async fn release(p: Arc<Plugin>, b: &[u8], pool: bool) -> Json<Value> {
    let req: AddressReq = match body(b) {
        Ok(r) => r,
        Err(e) => return ipam_answer(e),
    };
    ipam_answer(
        answer(
            move || {
                p.ipam.change(|book| {
                    if pool {
                        book.release_pool(&req.pool_id);
                    } else {
                        book.release_address(&req.pool_id, &req.address);
                    }
                    Ok(())
                })
            },
            never,
        )
        .await,
    )
}

async fn release_pool(State((_, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    release(p, &b, true).await
}

async fn release_address(State((_, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    release(p, &b, false).await
}

async fn request_address(State((sw, p)): State<St>, b: axum::body::Bytes) -> Json<Value> {
    let req: AddressReq = match body(&b) {
        Ok(r) => r,
        Err(e) => return ipam_answer(e),
    };
    let gateway = req
        .options
        .as_ref()
        .and_then(|o| o.get("RequestAddressType"))
        .map(String::as_str)
        == Some("com.docker.network.gateway");
    ipam_answer(
        answer(
            move || {
                // Held by a vswitch endpoint or gateway (endpoints attached with vswitchctl),
                // here or, on a cluster network, on another host.
                let networks = sw.networks();
                let mut held: std::collections::HashSet<Ipv4Addr> =
                    sw.ports().into_iter().map(|p| p.ip).collect();
                held.extend(networks.iter().map(|n| n.gateway));
                held.extend(
                    networks
                        .iter()
                        .flat_map(|n| n.remote_endpoints.iter().map(|r| r.ip)),
                );
                // A pool that is a vswitch network's subnet has that network's gateway.
                let pool = p.ipam.read(|b| b.subnet(&req.pool_id));
                let own: Vec<_> = networks
                    .iter()
                    .filter(|n| pool.is_some() && n.subnet.parse().ok() == pool)
                    .collect();
                if let (true, [n], Some(pool)) = (gateway, own.as_slice(), pool) {
                    if req.address.is_empty()
                        || req.address.split('/').next() == Some(&n.gateway.to_string())
                    {
                        let gw = format!("{}/{}", n.gateway, pool.prefix_len());
                        return Ok(json!({ "Address": gw, "Data": {} }));
                    }
                }
                let ip = p.ipam.change(|b| {
                    b.request_address(&req.pool_id, &req.address, gateway, |ip| held.contains(&ip))
                })?;
                Ok::<_, String>(json!({ "Address": ip, "Data": {} }))
            },
            never,
        )
        .await,
    )
}

/// Wait (up to a minute) until `key` is a network namespace (Docker mounts the container's
/// there when it starts it), then mount it at `/run/netns/NETNS` and let the switch note it.
fn bind_when_ready((sw, key, netns, network): (Arc<Switch>, String, String, String)) {
    use std::os::unix::fs::MetadataExt;
    let nsfs = std::fs::metadata("/proc/self/ns/net").map(|m| m.dev()).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let ready = std::fs::metadata(&key).ok().map(|m| m.dev()) == nsfs && nsfs.is_some();
        if ready {
            match crate::netns_mount::bind(&key, &netns).and_then(|()| {
                sw.bind_endpoint_namespace(&netns, &network)
                    .map_err(|e| e.to_string())
            }) {
                Ok(()) => return,
                Err(e) => {
                    log::warn!("Docker plugin: naming {key} {netns} failed: {e}");
                    return;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    log::warn!("Docker plugin: {key} never became a network namespace (container not started?)");
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_from_any_id_are_valid() {
        assert_eq!(network_name("aa7126f34e8d0732f145"), "d-aa7126f34e8d");
        assert_eq!(netns_of("é/../x"), "vsd-x");
        assert_eq!(handoff_name("0123456789abcdef"), "vsd01234567");
        assert!(
            handoff_name("0123456789abcdef").len() <= 15,
            "an interface name"
        );
        assert!(body::<EndpointReq>(b"{not json").is_err());
    }
}
