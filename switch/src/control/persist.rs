//! Persistence: restore at start-up (networks, endpoints, links, the uplink and published ports
//! from what `journal.rs` read), the tracked connections a graceful stop saves
//! (`conntrack.json`, used once), the lock that makes a state directory one daemon's, and the
//! one durable way the switch replaces its files ([`write_atomic`], also for the snapshot and
//! namespaces' resolv.conf): a reader sees the old content or the new, never a part, and the
//! new content is on disk when the call returns.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use super::networks::underlay_mtu;
use super::state::{Persisted, SavedConn, State};
use super::Switch;
use crate::Error;

/// Replace `path` with `data`: write a temporary file beside it, flush it to disk, rename it
/// over `path`, then flush the directory so the rename itself survives a crash. On an error
/// `path` keeps its old content and the temporary file is removed.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".vswitchd-tmp");
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?
    .sync_all()
}

impl Switch {
    /// Write the tracked connections of both families (except DNS forwards, which are
    /// short-lived) for the next start to take back.
    pub(super) fn save_conntrack(&self, st: &State) {
        save_flows(self, st, &self.shared.ct, "conntrack.json");
        save_flows(self, st, &self.shared.ct6, "conntrack6.json");
    }

    /// Take back the connections a graceful stop saved; the files are used once.
    fn restore_conntrack(&self, st: &State) {
        restore_flows(self, st, &self.shared.ct, "conntrack.json");
        restore_flows(self, st, &self.shared.ct6, "conntrack6.json");
    }

    /// Recreate what the state directory holds (on start, in the background: reads answer
    /// meanwhile, changes wait), then take back the saved connections. Nothing is dropped: an
    /// endpoint whose namespace or an uplink whose interface is missing waits as pending (see
    /// `watch.rs`); anything else that cannot be recreated is kept as it was, saved with the
    /// rest and logged. Restore writes nothing: the state on disk is already what it restores.
    pub(super) fn restore(&self, p: Persisted) {
        // Devices an earlier daemon on this directory left for endpoints the state does not
        // have: gone before anything is attached.
        let keep = p
            .endpoints
            .iter()
            .filter_map(|e| Some((e.netns.clone(), e.ifname.clone()?)))
            .collect();
        for dev in super::devices::remove_orphans(&self.mark, &keep) {
            log::warn!(
                "removed orphan device {dev}: an earlier vswitchd on this state directory left                  it for an endpoint the state does not have"
            );
        }
        // Route lookups first: no lock is held across them.
        let mtus: Vec<Option<u32>> = p.networks.iter().map(underlay_mtu).collect();
        let step = |f: &mut dyn FnMut(&mut State)| {
            let mut st = self.read();
            if !st.shutting_down {
                f(&mut st);
            }
            st.journal.clear();
            st.undo.clear();
            Self::unlock(st);
        };
        for (n, mtu) in p.networks.iter().zip(mtus) {
            step(&mut |st| {
                if let Err(e) = self.create_network_locked(st, n, mtu) {
                    log::error!(
                        "restoring network {} failed: {e}; kept in the state as it was, with                          its endpoints",
                        n.name
                    );
                    st.unrestored.networks.push(n.clone());
                }
            });
        }
        self.restore_endpoints(&p.endpoints);
        for (a, b) in &p.links {
            step(&mut |st| {
                if let Err(e) = self.link_locked(st, a, b, true) {
                    log::error!("restoring link {a} <-> {b} failed: {e}; kept in the state");
                    st.unrestored.links.push((a.clone(), b.clone()));
                }
            });
        }
        if let Some(u) = &p.uplink {
            step(&mut |st| self.restore_uplink(st, u));
        }
        for r in &p.published {
            step(&mut |st| {
                if let Err(e) = self.publish_locked(st, r) {
                    log::error!(
                        "restoring published port {} of {} failed: {e}; kept in the state",
                        r.spec,
                        r.netns
                    );
                    st.unrestored.published.push(r.clone());
                }
            });
        }
        step(&mut |st| self.restore_conntrack(st));
        self.restoring.store(false, Ordering::Release);
        let st = self.read();
        let pending = st
            .networks()
            .values()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| !e.is_up())
            .count();
        log::info!(
            "restore done: {} network(s), {} endpoint(s) ({pending} pending)",
            st.networks().len(),
            p.endpoints.len()
        );
    }

    /// Restore the endpoints: the checks and addresses under the lock, then their devices made
    /// (or taken back) from several threads without it, since each waits mostly on the kernel,
    /// then all put in the state with one snapshot and their resolv.conf files written at once.
    /// An endpoint whose device cannot be made waits as pending.
    fn restore_endpoints(&self, specs: &[crate::model::AttachRequest]) {
        use super::endpoints::{unplan, AttachPlan, Made};
        let mut plans = Vec::new();
        {
            let mut st = self.read();
            if st.shutting_down {
                return;
            }
            for a in specs {
                match self.plan_attach(&mut st, a) {
                    Ok(plan) => plans.push(plan),
                    Err(e) => {
                        self.keep_pending(&mut st, a, e);
                        self.restored.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
        let made: std::sync::Mutex<Vec<(AttachPlan, Result<Made, Error>)>> =
            std::sync::Mutex::new(Vec::with_capacity(plans.len()));
        super::devices::in_parallel(plans, |plan| {
            let r = self.make_device(&plan, true);
            self.restored.fetch_add(1, Ordering::AcqRel);
            made.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((plan, r));
        });
        let made = made.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut st = self.read();
        if st.shutting_down {
            // Stopped meanwhile: the devices just made close with `made` (persistent ones,
            // under --live-restore, stay for the next daemon).
            return;
        }
        let mut ports = Vec::new();
        for (plan, r) in made {
            match r {
                Ok(m) => {
                    let (info, port) = self.install_endpoint(&mut st, &plan, m);
                    ports.push((info, port));
                }
                Err(e) => {
                    unplan(&mut st, &plan);
                    self.keep_pending(&mut st, &plan.req, e);
                }
            }
        }
        self.sync(&mut st);
        let mut namespaces = std::collections::BTreeSet::new();
        for (info, port) in ports {
            if let Err(e) = self.register(&port) {
                log::error!(
                    "restoring endpoint {} on {}: registering its port failed ({e})",
                    info.netns,
                    info.network
                );
                if let Ok(ep) = self.remove_endpoint(&mut st, &info.netns, &info.network) {
                    let spec = st.net(&info.network).map(|n| n.endpoint_spec(&ep)).ok();
                    if let Some(spec) = spec {
                        self.keep_pending(&mut st, &spec, Error::device("register port")(e));
                    }
                }
                continue;
            }
            log::info!(
                "restored endpoint {}/{} on {}",
                info.netns,
                info.ifname,
                info.network
            );
            namespaces.insert(info.netns);
        }
        let state: &State = &st;
        super::devices::in_parallel(namespaces.into_iter().collect(), |ns: String| {
            super::resolv::write_resolv_conf(state, &ns)
        });
        st.journal.clear();
        st.undo.clear();
        self.restored
            .store(self.to_restore.load(Ordering::Acquire), Ordering::Release);
        Self::unlock(st);
    }

    /// Keep endpoint `a` as pending because of `e` (or, when even that is refused, in the
    /// state as it was).
    fn keep_pending(&self, st: &mut State, a: &crate::model::AttachRequest, e: Error) {
        let reason = e.to_string();
        match self.add_pending(st, a, reason.clone()) {
            Ok(()) => log::warn!(
                "endpoint {} on {} is pending: {reason}; retried until it can be attached, or \
                 detached",
                a.netns,
                a.network
            ),
            Err(e2) => {
                log::error!(
                    "restoring endpoint {} on {} failed: {reason} ({e2}); kept in the state as \
                     it was",
                    a.netns,
                    a.network
                );
                st.unrestored.endpoints.push(a.clone());
            }
        }
    }
}

/// The content of `path`: `None` when there is no such file, or when it cannot be read (logged,
/// with `consequence`).
fn read_if_present(path: &Path, consequence: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Some(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::error!("reading {} failed: {e}{consequence}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod test {
    use super::super::parse_publish_spec;
    use super::super::state::testing::{endpoint, network};
    use super::*;
    use crate::model::PublishRequest;
    use std::path::PathBuf;

    /// A fresh directory named after `tag` with `state.json` holding `first`.
    fn state_file(tag: &str, first: &[u8]) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("vswitch-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        write_atomic(&f, first).unwrap();
        (dir, f)
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let (dir, f) = state_file("persist", b"one");
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let (dir, f) = state_file("persist-f", b"old");
        // The temporary's name is taken by a directory: the write fails before the rename.
        std::fs::create_dir(dir.join("state.json.vswitchd-tmp")).unwrap();
        assert!(write_atomic(&f, b"new").is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_file_holds_what_restore_needs() {
        let mut st = State::new();
        network(&mut st, "b", "10.2.0.0/24", None);
        network(&mut st, "a", "10.1.0.0/24", None);
        let web = endpoint(&mut st, "web", "a");
        st.link("a", "b", true).unwrap();
        st.publish(&PublishRequest {
            netns: "web".into(),
            spec: "10.0.0.9::80/udp".into(),
            network: None,
        })
        .unwrap();
        let text = serde_json::to_vec(&st.persisted()).unwrap();
        let p: Persisted = serde_json::from_slice(&text).unwrap();
        let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "in creation order");
        assert_eq!(
            p.links,
            [("a".to_string(), "b".to_string())],
            "each pair once"
        );
        let e = &p.endpoints[0];
        assert_eq!(
            (e.ip.as_deref(), e.mac.clone()),
            (Some("10.1.0.2"), Some(web.mac.to_string()))
        );
        let spec = &p.published[0].spec;
        assert_eq!(
            parse_publish_spec(spec).unwrap(),
            (
                Some("10.0.0.9".parse().unwrap()),
                Some(32768),
                80,
                nat::Proto::Udp
            ),
            "the host port as resolved: {spec}"
        );
    }
}

/// The lock that makes a state directory one daemon's: `STATE_DIR/vswitchd.lock`, held (with
/// `flock`) for the daemon's life and holding its process id. Dropping it (or the process
/// ending, however it ends) releases it.
#[derive(Debug)]
pub struct StateDirLock {
    _file: std::fs::File,
}

impl StateDirLock {
    /// The lock file's name in the state directory.
    pub const FILE: &'static str = "vswitchd.lock";

    /// Take the lock on `dir` (which exists), or refuse naming the holder's process id.
    pub fn acquire(dir: &Path) -> Result<StateDirLock, Error> {
        use std::io::{Read, Seek};
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::device("open the state directory's lock file"))?;
        if !crate::sys::try_lock_exclusive(&file)
            .map_err(Error::device("lock the state directory"))?
        {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Error::StateDirInUse {
                dir: crate::error::shown(&dir.display().to_string()),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    crate::error::shown(pid)
                },
            });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(Error::device("write the state directory's lock file"))?;
        Ok(StateDirLock { _file: file })
    }
}

/// Write the flows of `ct` to `file` in the state directory.
fn save_flows<A>(sw: &Switch, st: &State, ct: &nat::Conntrack<A>, file: &str)
where
    A: nat::Addr + serde::Serialize,
{
    let Some(dir) = &sw.opts.state_dir else {
        return;
    };
    let names = st.net_names();
    let conns: Vec<SavedConn<A>> = ct
        .flows(None)
        .iter()
        .map(|f| f.saved())
        .filter(|f| f.kind != nat::NatKind::Dns)
        .filter_map(|f| Some(SavedConn::from_flow(&f, names.get(&f.zone)?)))
        .collect();
    let path = dir.join(file);
    let r = serde_json::to_vec(&conns)
        .map_err(std::io::Error::other)
        .and_then(|d| write_atomic(&path, &d));
    match r {
        Ok(()) => log::info!("saved {} tracked connection(s) to {file}", conns.len()),
        Err(e) => log::error!("saving connections to {} failed: {e}", path.display()),
    }
}

/// Take back the flows saved in `file` into `ct`; the file is used once.
fn restore_flows<A>(sw: &Switch, st: &State, ct: &nat::Conntrack<A>, file: &str)
where
    A: nat::Addr + serde::de::DeserializeOwned,
{
    let Some(dir) = &sw.opts.state_dir else {
        return;
    };
    let path = dir.join(file);
    let Some(data) = read_if_present(&path, "") else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    let conns: Vec<SavedConn<A>> = match serde_json::from_slice(&data) {
        Ok(c) => c,
        Err(e) => {
            log::error!(
                "{} is unreadable ({e}); connections not restored",
                path.display()
            );
            return;
        }
    };
    let now = sw.shared.now_ms();
    let (mut ok, mut skipped) = (0, 0);
    for c in &conns {
        let flow = st.networks().get(c.network()).and_then(|n| c.to_flow(n.id));
        match flow.map(|f| ct.import(&f, now)) {
            Some(Ok(true)) => ok += 1,
            _ => skipped += 1,
        }
    }
    log::info!("restored {ok} tracked connection(s) from {file}, skipped {skipped}");
}
