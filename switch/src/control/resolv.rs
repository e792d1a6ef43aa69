//! The namespaces' resolv.conf: `/etc/netns/NETNS/resolv.conf` names the gateways of the
//! networks a namespace is attached to (they answer DNS), the namespace's own file kept aside
//! and put back when the last attachment goes; and the host's resolver the gateways forward to.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::state::{Net, State};

/// The first usable IPv4 nameserver of the daemon's /etc/resolv.conf (loopback stubs such as
/// systemd-resolved's 127.0.0.53 are not reachable through the uplink and are skipped).
pub(super) fn host_resolver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Point `/etc/netns/NETNS/resolv.conf` at the gateways of the networks `netns` is attached to
/// (so `ip netns exec NETNS` programs resolve endpoint names), keeping the original aside; with
/// no attachment left, put the original back. Failures are logged, never fatal.
pub(super) fn write_resolv_conf(st: &State, netns: &str) {
    let dir = PathBuf::from("/etc/netns").join(netns);
    let file = dir.join("resolv.conf");
    let saved = dir.join("resolv.conf.vswitchd-orig");
    let mut nets: Vec<&Net> = st
        .networks()
        .values()
        .filter(|n| n.endpoint_ip(netns).is_some())
        .collect();
    nets.sort_by_key(|n| n.id);
    let result = (|| -> std::io::Result<()> {
        if nets.is_empty() {
            if saved.exists() {
                std::fs::rename(&saved, &file)?;
            } else if is_ours(&file) {
                std::fs::remove_file(&file)?;
                let _ = std::fs::remove_dir(&dir); // only if empty
            }
            return Ok(());
        }
        std::fs::create_dir_all(&dir)?;
        if file.exists() && !is_ours(&file) && !saved.exists() {
            std::fs::rename(&file, &saved)?;
        }
        let mut text = String::from("# written by vswitchd: the network gateways answer DNS\n");
        for n in nets {
            text.push_str(&format!("nameserver {}\n", n.gateway));
        }
        if std::fs::read(&file).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(()); // a restart with the files of the previous run (--live-restore)
        }
        write_replace(&file, text.as_bytes())
    })();
    if let Err(e) = result {
        log::warn!("updating {} failed: {e}", file.display());
    }
}

/// Replace `file` with `data` at once (readers see the old file or the new one, never half of
/// one), not durably: no fsync, since these files are derived from the state and every restore
/// writes them again (two fsyncs per namespace were most of the time a restart with 1000
/// endpoints spent on them).
fn write_replace(file: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".vswitchd-tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether `file` is one vswitchd wrote.
fn is_ours(file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| t.starts_with("# written by vswitchd"))
}
