//! `vswitch-cni`: a CNI plugin (spec 1.0.0 and 1.1.0) that puts a container on a vswitch network
//! by asking vswitchd over its API. The runtime (containerd, podman, Kubernetes through CRI)
//! runs it with the command in `CNI_COMMAND`, the container in `CNI_CONTAINERID`, its network
//! namespace in `CNI_NETNS` and the interface name in `CNI_IFNAME`, and the network's
//! configuration on stdin:
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"front","type":"vswitch-cni","network":"front",
//!  "socket":"/run/vswitchd/vswitchd.sock"}
//! ```
//!
//! `network` defaults to `name`, `socket` to vswitchd's default. A namespace given by a path
//! outside `/run/netns` (`/proc/PID/ns/net`, as `ctr run --cni` gives) is bind-mounted to
//! `/run/netns/vscni-CONTAINERID` first, since vswitchd attaches namespaces by name; `DEL`
//! removes that mount with the last attachment.
//!
//! Errors go to stdout as the spec's JSON (`{"cniVersion","code","msg","details"}`) with exit
//! status 1. Codes: 1 incompatible version, 4 bad environment, 6 undecodable input, 7 invalid
//! network configuration, 11 try again later (vswitchd unreachable or busy), 50 plugin not
//! available (`STATUS`), 100 and up this plugin's own (100: vswitchd refused the request).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use switch::model::{AttachRequest, EndpointInfo, NetworkInfo, PublishRequest};

use crate::client::{encode, Client, ClientError};
use crate::netns_mount::{self, NETNS_DIR};
use crate::{routes, DEFAULT_SOCKET};

/// The spec versions this plugin speaks.
pub const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];

/// Prefix of the namespace names this plugin makes for namespaces given by path.
const OWN_PREFIX: &str = "vscni-";

/// A CNI error: the spec's code, message and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The spec's error code.
    pub code: u32,
    /// One line: what went wrong.
    pub msg: String,
    /// More about it.
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error as the spec's JSON.
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

/// A vswitchd failure: 11 (try again later) when it cannot be reached or is restoring, else 100.
fn api_err(what: &str, e: ClientError) -> CniError {
    let code = match &e {
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Io(_) => 11,
        ClientError::Api(m) if m.contains("restor") || m.contains("shutting down") => 11,
        _ => 100,
    };
    CniError::new(code, format!("{what}: {e}"), "")
}

/// A port mapping (the `portMappings` capability).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host (the uplink).
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Host address to publish on (default: the uplink's).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// What the runtime passes in `runtimeConfig`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Ports to publish.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Requested addresses (the `ips` capability), `ADDR[/PREFIX]`.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// One attachment the runtime still has (`GC`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The network configuration on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// Spec version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network configuration name.
    pub name: String,
    /// The plugin (`vswitch-cni`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The vswitch network (default: `name`).
    #[serde(default)]
    pub network: Option<String>,
    /// vswitchd's control socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The previous plugin's result in a chain.
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    /// Capabilities the runtime filled in.
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    /// `GC`: the attachments to keep.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parse and check stdin: 6 when it is not JSON, 7 when fields are missing or wrong, 1 for
    /// a version this plugin does not speak.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(6, "the network configuration is not JSON", e.to_string())
        })?;
        let conf: NetConf = serde_json::from_value(v)
            .map_err(|e| CniError::new(7, "invalid network configuration", e.to_string()))?;
        if !SUPPORTED.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                1,
                format!(
                    "cniVersion {} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED.join(", ")
                ),
                "",
            ));
        }
        if conf.name.is_empty() {
            return Err(CniError::new(
                7,
                "invalid network configuration: empty name",
                "",
            ));
        }
        Ok(conf)
    }

    /// The vswitch network.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    fn client(&self) -> Client {
        Client::new(self.socket.as_deref().unwrap_or(Path::new(DEFAULT_SOCKET)))
            .with_timeout(Some(std::time::Duration::from_secs(30)))
    }
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS` (`K=V;K=V`).
    pub args: Option<String>,
}

impl Env {
    /// Read the environment.
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
        }
    }

    fn need<'a>(&self, v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                4,
                format!("{name} is not set"),
                format!("CNI_COMMAND {} needs it", self.command),
            )
        })
    }

    /// `IP=` from `CNI_ARGS`.
    fn arg_ip(&self) -> Option<String> {
        self.args.as_deref()?.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "IP").then(|| v.trim().to_string())
        })
    }
}

/// The namespace name this plugin uses for container `id`'s namespace when the runtime gives a
/// path outside `/run/netns`.
pub fn own_netns_name(id: &str) -> String {
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    format!("{OWN_PREFIX}{clean}")
}

/// The vswitchd namespace name for `CNI_NETNS` `path`: its file name when it is in
/// `/run/netns` (or `/var/run/netns`), else `None` (it has to be bind-mounted there first).
pub fn netns_name_of(path: &str) -> Option<String> {
    let p = Path::new(path);
    let parent = p.parent()?;
    let named = parent == Path::new(NETNS_DIR) || parent == Path::new("/var/run/netns");
    named.then(|| p.file_name()?.to_str().map(str::to_string))?
}

/// Run one command; `Ok(Some(json))` is printed on stdout.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "VERSION" => {
            let version = NetConf::parse(stdin)
                .map(|c| c.cni_version)
                .unwrap_or_else(|_| SUPPORTED[SUPPORTED.len() - 1].to_string());
            Ok(Some(
                json!({"cniVersion": version, "supportedVersions": SUPPORTED}),
            ))
        }
        "ADD" => add(env, &NetConf::parse(stdin)?).map(Some),
        "DEL" => del(env, &NetConf::parse(stdin)?).map(|()| None),
        "CHECK" => check(env, &NetConf::parse(stdin)?).map(|()| None),
        "STATUS" => status(&NetConf::parse(stdin)?).map(|()| None),
        "GC" => gc(&NetConf::parse(stdin)?).map(|()| None),
        "" => Err(CniError::new(4, "CNI_COMMAND is not set", "")),
        other => Err(CniError::new(
            4,
            format!("unknown CNI_COMMAND {other}"),
            "ADD, DEL, CHECK, STATUS, GC or VERSION",
        )),
    }
}

/// The namespace to attach: named ones as they are, others bind-mounted under our name.
fn namespace(id: &str, path: &str, make: bool) -> Result<String, CniError> {
    if let Some(name) = netns_name_of(path) {
        return Ok(name);
    }
    let name = own_netns_name(id);
    if make {
        if !Path::new(path).exists() {
            return Err(CniError::new(
                4,
                format!("CNI_NETNS {path} does not exist"),
                "",
            ));
        }
        netns_mount::bind(path, &name).map_err(|e| CniError::new(5, e, ""))?;
    }
    Ok(name)
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let id = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let path = env.need(&env.netns, "CNI_NETNS")?;
    let ifname = env.need(&env.ifname, "CNI_IFNAME")?;
    let c = conf.client();
    let network = conf.network();
    // The network must exist (a clear error before anything is made).
    let net: NetworkInfo = c
        .call::<NetworkInfo>(
            "GET",
            &format!("{}/{}", routes::NETWORKS, encode(network)),
            None::<&()>,
        )
        .map_err(|e| match e {
            // The configuration names a network vswitchd does not have.
            ClientError::Api(m) if m.contains("not found") => CniError::new(
                7,
                format!("invalid network configuration: {m}"),
                format!("create it first: vswitchctl network create {network} --subnet CIDR"),
            ),
            e => api_err(&format!("network {network}"), e),
        })?;
    let netns = namespace(id, path, true)?;
    // Addresses asked for (the `ips` capability, else CNI_ARGS IP=A[,B]): one of each family.
    let asked: Vec<String> = if conf.runtime_config.ips.is_empty() {
        env.arg_ip()
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    } else {
        conf.runtime_config.ips.clone()
    };
    let bare = |s: &String| s.split('/').next().unwrap_or(s).trim().to_string();
    let req = AttachRequest {
        ifname: Some(ifname.to_string()),
        ip: asked.iter().find(|s| !s.contains(':')).map(bare),
        ip6: asked.iter().find(|s| s.contains(':')).map(bare),
        ..AttachRequest::new(&netns, network)
    };
    let made = c.call::<EndpointInfo>("POST", routes::ENDPOINTS, Some(&req));
    let ep = match made {
        Ok(ep) => ep,
        Err(e) => {
            if netns.starts_with(OWN_PREFIX) && !attached_anywhere(&c, &netns) {
                netns_mount::unbind(&netns);
            }
            return Err(api_err(&format!("attach to {network}"), e));
        }
    };
    for m in &conf.runtime_config.port_mappings {
        let proto = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
        let spec = match m
            .host_ip
            .as_deref()
            .filter(|h| !h.is_empty() && *h != "0.0.0.0")
        {
            Some(h) => format!("{h}:{}:{}/{proto}", m.host_port, m.container_port),
            None => format!("{}:{}/{proto}", m.host_port, m.container_port),
        };
        let p = PublishRequest {
            netns: netns.clone(),
            spec,
            network: Some(network.to_string()),
        };
        if let Err(e) = c.call::<Value>("POST", routes::PUBLISH, Some(&p)) {
            let _ = detach(&c, &netns, network);
            if netns.starts_with(OWN_PREFIX) && !attached_anywhere(&c, &netns) {
                netns_mount::unbind(&netns);
            }
            return Err(api_err(
                &format!("publish {}->{}", m.host_port, m.container_port),
                e,
            ));
        }
    }
    Ok(result(conf, path, &ep, &net))
}

/// The ADD result: this interface, its addresses (IPv6 too on a dual-stack network), the
/// default routes and the gateway as DNS server, after what a previous plugin in the chain
/// returned.
fn result(conf: &NetConf, sandbox: &str, ep: &EndpointInfo, net: &NetworkInfo) -> Value {
    let gateway = net.gateway;
    let prev = conf.prev_result.clone().unwrap_or_else(|| json!({}));
    let list = |k: &str| {
        prev.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut interfaces = list("interfaces");
    let index = interfaces.len();
    interfaces.push(json!({"name": ep.ifname, "mac": ep.mac, "mtu": ep.mtu, "sandbox": sandbox}));
    let mut ips = list("ips");
    ips.push(json!({
        "address": format!("{}/{}", ep.ip, ep.prefix_len),
        "gateway": gateway.to_string(),
        "interface": index,
    }));
    let mut routes = list("routes");
    routes.push(json!({"dst": "0.0.0.0/0", "gw": gateway.to_string()}));
    if let (Some(ip6), Some(subnet6), Some(gw6)) = (ep.ip6, &net.subnet6, net.gateway6) {
        let prefix = subnet6.rsplit('/').next().unwrap_or("64");
        ips.push(json!({
            "address": format!("{ip6}/{prefix}"),
            "gateway": gw6.to_string(),
            "interface": index,
        }));
        routes.push(json!({"dst": "::/0", "gw": gw6.to_string()}));
    }
    let mut dns = prev.get("dns").cloned().unwrap_or_else(|| json!({}));
    let mut servers = dns
        .get("nameservers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    servers.push(json!(gateway.to_string()));
    dns["nameservers"] = Value::Array(servers);
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}

/// The endpoint of `netns` on `network`, if vswitchd has one (`Ok(None)`: no such network or
/// endpoint).
fn endpoint(c: &Client, netns: &str, network: &str) -> Result<Option<EndpointInfo>, CniError> {
    let nets: Vec<NetworkInfo> = c
        .call("GET", routes::NETWORKS, None::<&()>)
        .map_err(|e| api_err("list networks", e))?;
    Ok(nets
        .into_iter()
        .find(|n| n.name == network)
        .and_then(|n| n.endpoints.into_iter().find(|e| e.netns == netns)))
}

/// Whether `netns` is attached to any network.
fn attached_anywhere(c: &Client, netns: &str) -> bool {
    let nets: Result<Vec<NetworkInfo>, _> = c.call("GET", routes::NETWORKS, None::<&()>);
    nets.map_or(true, |nets| {
        nets.iter()
            .any(|n| n.endpoints.iter().any(|e| e.netns == netns))
    })
}

fn detach(c: &Client, netns: &str, network: &str) -> Result<(), CniError> {
    c.call::<Value>(
        "DELETE",
        &format!(
            "{}/{}/{}",
            routes::ENDPOINTS,
            encode(netns),
            encode(network)
        ),
        None::<&()>,
    )
    .map(|_| ())
    .map_err(|e| api_err(&format!("detach from {network}"), e))
}

/// DEL: idempotent. Nothing to remove (no such endpoint, network or namespace) is success.
fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let id = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let network = conf.network();
    let netns = match env.netns.as_deref() {
        Some(path) => namespace(id, path, false)?,
        None => own_netns_name(id), // the namespace is gone: our name, if we made one
    };
    let c = conf.client();
    if endpoint(&c, &netns, network)?.is_some() {
        detach(&c, &netns, network)?;
    }
    if netns.starts_with(OWN_PREFIX) && !attached_anywhere(&c, &netns) {
        netns_mount::unbind(&netns);
    }
    Ok(())
}

/// CHECK: the endpoint exists, is up, and has the address the previous result says.
fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let id = env.need(&env.container_id, "CNI_CONTAINERID")?;
    let path = env.need(&env.netns, "CNI_NETNS")?;
    let ifname = env.need(&env.ifname, "CNI_IFNAME")?;
    let netns = namespace(id, path, false)?;
    let network = conf.network();
    let ep = endpoint(&conf.client(), &netns, network)?.ok_or_else(|| {
        CniError::new(
            100,
            format!("{netns} has no endpoint on network {network}"),
            "",
        )
    })?;
    if ep.ifname != ifname || ep.state != "up" {
        return Err(CniError::new(
            100,
            format!(
                "endpoint {netns} on {network} is {} {} (expected {ifname} up)",
                ep.ifname, ep.state
            ),
            ep.reason.unwrap_or_default(),
        ));
    }
    let want = format!("{}/{}", ep.ip, ep.prefix_len);
    let listed: Vec<String> = conf
        .prev_result
        .as_ref()
        .and_then(|p| p.get("ips"))
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("address")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() && !listed.contains(&want) {
        return Err(CniError::new(
            100,
            format!("endpoint {netns} on {network} has {want}, not what the result listed"),
            listed.join(", "),
        ));
    }
    Ok(())
}

/// STATUS (1.1): ready when vswitchd answers and the network exists.
fn status(conf: &NetConf) -> Result<(), CniError> {
    let network = conf.network();
    let nets: Vec<NetworkInfo> = conf
        .client()
        .call("GET", routes::NETWORKS, None::<&()>)
        .map_err(|e| CniError::new(50, format!("vswitchd is not available: {e}"), ""))?;
    if !nets.iter().any(|n| n.name == network) {
        return Err(CniError::new(
            50,
            format!("vswitchd has no network {network}"),
            "create it: vswitchctl network create",
        ));
    }
    Ok(())
}

/// GC (1.1): detach this plugin's endpoints on the network that the runtime no longer lists.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let keep: BTreeMap<String, ()> = valid
        .iter()
        .map(|a| (own_netns_name(&a.container_id), ()))
        .collect();
    let c = conf.client();
    let network = conf.network();
    let nets: Vec<NetworkInfo> = c
        .call("GET", routes::NETWORKS, None::<&()>)
        .map_err(|e| api_err("list networks", e))?;
    let stale: Vec<String> = nets
        .iter()
        .filter(|n| n.name == network)
        .flat_map(|n| n.endpoints.iter())
        .filter(|e| e.netns.starts_with(OWN_PREFIX) && !keep.contains_key(&e.netns))
        .map(|e| e.netns.clone())
        .collect();
    for netns in stale {
        detach(&c, &netns, network)?;
        if !attached_anywhere(&c, &netns) {
            netns_mount::unbind(&netns);
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    fn env(cmd: &str) -> Env {
        Env {
            command: cmd.into(),
            ..Env::default()
        }
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let conf = br#"{"cniVersion":"1.0.0","name":"front","type":"vswitch-cni"}"#;
        let code = |e: &Env, stdin: &[u8]| run(e, stdin).unwrap_err().code;
        assert_eq!(code(&env("ADD"), b"{not json"), 6);
        assert_eq!(code(&env("ADD"), br#"{"cniVersion":"1.0.0"}"#), 7);
        assert_eq!(
            code(
                &env("ADD"),
                br#"{"cniVersion":"0.3.1","name":"x","type":"vswitch-cni"}"#
            ),
            1
        );
        let e = run(&env("ADD"), conf).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e:?}");
        assert_eq!(code(&env(""), conf), 4);
        assert_eq!(code(&env("FROB"), conf), 4);
        let v = run(&env("VERSION"), b"").unwrap().unwrap();
        assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    }

    #[test]
    fn namespaces_by_name_and_by_path() {
        assert_eq!(netns_name_of("/var/run/netns/cni-1"), Some("cni-1".into()));
        assert_eq!(netns_name_of("/run/netns/web"), Some("web".into()));
        assert_eq!(netns_name_of("/proc/42/ns/net"), None);
        assert_eq!(own_netns_name("ab/c d$9"), "vscni-abcd9");
        let e = Env {
            args: Some("IgnoreUnknown=1;IP=10.1.0.9".into()),
            ..Env::default()
        };
        assert_eq!(e.arg_ip().as_deref(), Some("10.1.0.9"));
    }

    #[test]
    fn the_result_follows_a_previous_plugin() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"front","type":"vswitch-cni",
                 "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"lo"}],
                 "ips":[{"address":"127.0.0.1/8","interface":0}],"dns":{"nameservers":["192.0.2.53"]}}}"#,
        )
        .unwrap();
        let ep = EndpointInfo {
            netns: "n".into(),
            network: "front".into(),
            ifname: "eth0".into(),
            port: "p1".into(),
            ip: "10.1.0.2".parse().unwrap(),
            prefix_len: 24,
            ip6: None,
            mac: "02:42:0a:01:00:02".into(),
            mtu: 1500,
            aliases: vec![],
            allow_spoof: false,
            state: "up".into(),
            reason: None,
        };
        let mut net: NetworkInfo = serde_json::from_value(json!({
            "name": "front", "subnet": "10.1.0.0/24", "gateway": "10.1.0.1",
            "gateway_mac": "02:00:00:00:00:01", "mtu": 1500, "internal": false, "icc": true,
            "links": [], "vni": null, "peers": [], "vxlan_port": null, "endpoints": [],
            "published": []
        }))
        .unwrap();
        let r = result(&conf, "/proc/1/ns/net", &ep, &net);
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["ips"][1]["address"], "10.1.0.2/24");
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(r["dns"]["nameservers"], json!(["192.0.2.53", "10.1.0.1"]));
        assert_eq!(
            r["ips"].as_array().unwrap().len(),
            2,
            "no IPv6 on a v4 network"
        );
        // Dual stack: the IPv6 address and default route too.
        net.subnet6 = Some("fd00:1::/64".into());
        net.gateway6 = Some("fd00:1::1".parse().unwrap());
        let ep = EndpointInfo {
            ip6: Some("fd00:1::2".parse().unwrap()),
            ..ep
        };
        let r = result(&conf, "/proc/1/ns/net", &ep, &net);
        assert_eq!(r["ips"][2]["address"], "fd00:1::2/64");
        assert_eq!(r["ips"][2]["gateway"], "fd00:1::1");
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd00:1::1"}));
    }
}
