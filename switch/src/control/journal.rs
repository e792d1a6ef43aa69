//! The state on disk, written in O(change): a snapshot (`STATE_DIR/state.json`, a [`Persisted`]
//! naming the journal that continues it) and an append-only journal (`journal.N`, one JSON
//! [`Record`] per line). A change is appended and flushed to disk (`fdatasync`) before it is
//! answered; when the journal has grown to the size of the state, it is compacted: a new journal
//! is started under the lock and the snapshot of the state at that moment is written in the
//! background (temporary file, fsync, rename, fsync of the directory), after which the old
//! journal is removed. Start-up reads the snapshot and replays every journal from the one it
//! names, in order, so a crash at any point loses nothing that was answered.
//!
//! A failed append is cut back to the previous length (so the journal never keeps half a
//! line) and reported: the caller takes the change back. A snapshot that cannot be parsed is
//! kept as `state.json.bad-TIMESTAMP` (the newest [`BAD_KEPT`] copies stay) with the journals
//! that continued it; the daemon starts empty. A journal line that cannot be parsed is skipped
//! and logged, its journal copied aside the same way; a torn last line (a crash in the middle
//! of an append that was never answered) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::persist::write_atomic;
use super::state::Persisted;
use crate::model::{AttachRequest, NetworkCreate, PublishRequest, UplinkSet};

/// How many `.bad` copies of each file are kept.
pub(super) const BAD_KEPT: usize = 5;

/// Journal records appended before compaction is considered at all.
const COMPACT_MIN: usize = 1024;

/// One change to the persisted state, as appended to the journal. Each record is the change's
/// whole effect on [`Persisted`] (see [`Persisted::apply`]): a put replaces the object of the
/// same key or adds it; a removal takes away what the switch takes away with the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Record {
    /// A network created, or changed (peers): its whole spec, resolved.
    Network { spec: NetworkCreate },
    /// A network removed, with its links.
    NetworkRm { name: String },
    /// Two networks linked or unlinked.
    Link { a: String, b: String, linked: bool },
    /// An endpoint attached: its spec with the resolved address, MAC and interface name.
    Endpoint { spec: AttachRequest },
    /// An endpoint detached, with its published ports.
    Detach { netns: String, network: String },
    /// The uplink set or removed.
    Uplink { spec: Option<UplinkSet> },
    /// A port published (its spec with the host port resolved, and its network).
    Publish { spec: PublishRequest },
    /// A published port removed: the persisted spec it had.
    Unpublish {
        netns: String,
        network: String,
        spec: String,
    },
}

impl Persisted {
    /// Apply one journal record.
    pub(super) fn apply(&mut self, r: Record) {
        match r {
            Record::Network { spec } => {
                match self.networks.iter_mut().find(|n| n.name == spec.name) {
                    Some(n) => *n = spec,
                    None => self.networks.push(spec),
                }
            }
            Record::NetworkRm { name } => {
                self.networks.retain(|n| n.name != name);
                self.links.retain(|(a, b)| *a != name && *b != name);
            }
            Record::Link { a, b, linked } => {
                let pair = if a < b { (a, b) } else { (b, a) };
                self.links.retain(|l| *l != pair);
                if linked {
                    self.links.push(pair);
                }
            }
            Record::Endpoint { spec } => {
                match self
                    .endpoints
                    .iter_mut()
                    .find(|e| e.netns == spec.netns && e.network == spec.network)
                {
                    Some(e) => *e = spec,
                    None => self.endpoints.push(spec),
                }
            }
            Record::Detach { netns, network } => {
                self.endpoints
                    .retain(|e| !(e.netns == netns && e.network == network));
                self.published
                    .retain(|p| !(p.netns == netns && p.network.as_deref() == Some(&network)));
            }
            Record::Uplink { spec } => self.uplink = spec,
            Record::Publish { spec } => self.published.push(spec),
            Record::Unpublish {
                netns,
                network,
                spec,
            } => {
                if let Some(i) = self.published.iter().position(|p| {
                    p.netns == netns && p.network.as_deref() == Some(&network) && p.spec == spec
                }) {
                    self.published.remove(i);
                }
            }
        }
    }

    /// Objects in the state (what a snapshot costs to write, roughly).
    fn objects(&self) -> usize {
        self.networks.len()
            + self.endpoints.len()
            + self.links.len()
            + self.published.len()
            + usize::from(self.uplink.is_some())
    }
}

/// The state directory's files, open for appending.
pub(super) struct Store {
    dir: PathBuf,
    /// The journal appended to: `journal.GEN`.
    gen: u64,
    file: Option<File>,
    /// Its length after the last whole record.
    len: u64,
    /// Records appended since the last snapshot.
    records: usize,
    /// Objects in the state when last counted (the snapshot's size, roughly).
    objects: usize,
    /// A background snapshot is being written.
    compacting: Arc<AtomicBool>,
    /// Records before compaction is considered ([`COMPACT_MIN`]; tests lower it).
    pub(super) compact_min: usize,
    /// Fail every append as a full disk would (unit tests of taking a change back; the
    /// integration tests fill a real tmpfs).
    #[cfg(test)]
    pub(super) full: bool,
}

/// What [`Store::open`] found.
pub(super) struct Loaded {
    pub(super) store: Store,
    pub(super) state: Persisted,
}

impl Store {
    /// Read the snapshot and replay the journals after it. `Err` only when the state cannot be
    /// read at all (an I/O error, not a parse error): starting empty would then overwrite it.
    pub(super) fn open(dir: &Path) -> io::Result<Loaded> {
        let snap_path = dir.join("state.json");
        let (mut state, mut gen) = match std::fs::read(&snap_path) {
            Ok(data) => match serde_json::from_slice::<Persisted>(&data) {
                Ok(p) => {
                    let g = p.journal;
                    (p, g)
                }
                Err(e) => {
                    let bad = keep_bad(&snap_path)?;
                    // The journals continued the unreadable snapshot: without it they are
                    // changes to an unknown state. Keep them beside it.
                    let mut moved = Vec::new();
                    for (_, j) in journals(dir)? {
                        moved.push(keep_bad(&j)?);
                    }
                    log::error!(
                        "state {} is unreadable ({e}); kept as {}{} and starting empty",
                        snap_path.display(),
                        bad.display(),
                        if moved.is_empty() {
                            String::new()
                        } else {
                            format!(" (with {} journal file(s) beside it)", moved.len())
                        }
                    );
                    (Persisted::default(), 0)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Persisted::default(), 0),
            Err(e) => return Err(e),
        };
        let mut records = 0;
        let mut last = None;
        for (n, path) in journals(dir)? {
            if n < gen {
                // Compacted into the snapshot; left behind by a crash before its removal.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            records += replay(&path, &mut state)?;
            last = Some(n);
        }
        if let Some(n) = last {
            gen = gen.max(n);
        }
        let path = journal_path(dir, gen);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        sync_dir(dir)?;
        let objects = state.objects();
        Ok(Loaded {
            store: Store {
                dir: dir.to_path_buf(),
                gen,
                file: Some(file),
                len,
                records,
                objects,
                compacting: Arc::new(AtomicBool::new(false)),
                compact_min: COMPACT_MIN,
                #[cfg(test)]
                full: false,
            },
            state,
        })
    }

    /// The journal appended to.
    pub(super) fn journal_path(&self) -> PathBuf {
        journal_path(&self.dir, self.gen)
    }

    /// Append `recs` and flush them to disk. On an error the journal is cut back to what it
    /// held, so the change can be taken back as if it had never been made.
    pub(super) fn append(&mut self, recs: &[Record]) -> io::Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut line = Vec::with_capacity(256 * recs.len());
        for r in recs {
            serde_json::to_writer(&mut line, r).map_err(io::Error::other)?;
            line.push(b'\n');
        }
        #[cfg(test)]
        if self.full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                // A previous failure could not cut the journal back: start a new one.
                self.rotate()?;
                self.file.as_mut().expect("rotate opens the journal")
            }
        };
        let r = file.write_all(&line).and_then(|()| file.sync_data());
        if let Err(e) = r {
            if file
                .set_len(self.len)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                // Whatever is at the end of this journal stays unanswered: the next change
                // goes to a new one.
                self.file = None;
            }
            return Err(e);
        }
        self.len += line.len() as u64;
        self.records += recs.len();
        Ok(())
    }

    /// Start journal `gen + 1` (created and its name made durable). The old journal stays
    /// until a snapshot covers it.
    fn rotate(&mut self) -> io::Result<()> {
        let next = journal_path(&self.dir, self.gen + 1);
        let file = OpenOptions::new().create(true).append(true).open(&next)?;
        sync_dir(&self.dir)?;
        self.gen += 1;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Whether the journal has grown enough to compact (as large as the state it continues,
    /// so writing snapshots costs O(1) per change on average).
    pub(super) fn wants_compaction(&self) -> bool {
        self.records >= self.compact_min.max(self.objects)
            && !self.compacting.load(Ordering::Acquire)
    }

    /// Compact: start a new journal now and write `snap` (the state as of now) as the
    /// snapshot that continues into it, in the background. Old journals are removed once the
    /// snapshot is durable; if writing it fails, they stay and are replayed on start.
    pub(super) fn compact(&mut self, mut snap: Persisted) {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.rotate() {
            log::warn!("compacting the state journal: starting a new journal failed: {e}");
            self.compacting.store(false, Ordering::Release);
            return;
        }
        self.objects = snap.objects();
        self.records = 0;
        snap.journal = self.gen;
        let (dir, gen, busy) = (self.dir.clone(), self.gen, self.compacting.clone());
        let spawned = std::thread::Builder::new()
            .name("vs-compact".into())
            .spawn(move || {
                write_snapshot(&dir, gen, &snap);
                busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            log::warn!("compacting the state journal: {e}");
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Write the snapshot now and remove the journals it covers (on a graceful stop, so the
    /// state directory holds one readable file).
    pub(super) fn compact_now(&mut self, mut snap: Persisted) -> io::Result<()> {
        self.settle();
        self.rotate()?;
        self.objects = snap.objects();
        self.records = 0;
        snap.journal = self.gen;
        let data = serde_json::to_vec_pretty(&snap).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("state.json"), &data)?;
        remove_journals_before(&self.dir, self.gen);
        Ok(())
    }

    /// Wait for a background snapshot to be written.
    pub(super) fn settle(&self) {
        while self.compacting.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The background half of [`Store::compact`].
fn write_snapshot(dir: &Path, gen: u64, snap: &Persisted) {
    let path = dir.join("state.json");
    let r = serde_json::to_vec_pretty(snap)
        .map_err(io::Error::other)
        .and_then(|d| write_atomic(&path, &d));
    match r {
        Ok(()) => remove_journals_before(dir, gen),
        Err(e) => log::warn!(
            "compacting the state journal: writing {} failed ({e}); the journals stay and are \
             replayed on start",
            path.display()
        ),
    }
}

fn remove_journals_before(dir: &Path, gen: u64) {
    if let Ok(js) = journals(dir) {
        for (n, p) in js {
            if n < gen {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}"))
}

/// The journals in `dir`, oldest first.
fn journals(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("journal."))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        v.push((n, e.path()));
    }
    v.sort();
    Ok(v)
}

/// Apply the records of the journal at `path` to `state`; how many were applied.
fn replay(path: &Path, state: &mut Persisted) -> io::Result<usize> {
    let data = std::fs::read(path)?;
    let mut n = 0;
    let mut bad = 0;
    let mut rest = &data[..];
    while !rest.is_empty() {
        let (line, after, whole) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        if !whole {
            // A torn append: it was never answered. Cut it off so the next append starts on a
            // line of its own.
            let keep = (data.len() - rest.len()) as u64;
            log::warn!(
                "{}: dropping an incomplete last record ({} bytes) left by a crash",
                path.display(),
                rest.len()
            );
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(keep).and_then(|()| f.sync_data()))?;
            break;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                state.apply(r);
                n += 1;
            }
            Err(e) => {
                bad += 1;
                log::error!(
                    "{}: skipping an unreadable record ({e}): {}",
                    path.display(),
                    crate::error::shown(&String::from_utf8_lossy(&line[..line.len().min(200)]))
                );
            }
        }
        rest = after;
    }
    if bad > 0 {
        let copy = bad_name(path);
        std::fs::copy(path, &copy)?;
        prune_bad(path);
        log::error!(
            "{}: {bad} unreadable record(s) skipped; a copy is kept as {}",
            path.display(),
            copy.display()
        );
    }
    Ok(n)
}

/// `PATH.bad-SECONDS.NANOS`: a name no earlier copy has.
fn bad_name(path: &Path) -> PathBuf {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".bad-{}.{:09}", t.as_secs(), t.subsec_nanos()));
    PathBuf::from(name)
}

/// Move `path` aside as a `.bad` copy (the newest [`BAD_KEPT`] are kept); the copy's path.
fn keep_bad(path: &Path) -> io::Result<PathBuf> {
    let bad = bad_name(path);
    std::fs::rename(path, &bad)?;
    prune_bad(path);
    Ok(bad)
}

/// Remove all but the newest [`BAD_KEPT`] `.bad` copies of `path`.
fn prune_bad(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let prefix = format!("{name}.bad-");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let stamp = n.strip_prefix(&prefix)?;
            // Seconds and nanoseconds, zero-padded to sort as text.
            let (s, ns) = stamp.split_once('.')?;
            Some((format!("{s:0>20}.{ns}"), e.path()))
        })
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(BAD_KEPT);
    for (_, p) in copies.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
pub(super) mod test {
    use super::*;

    /// A temporary directory, removed on drop (also when the test fails).
    pub(in crate::control) struct TempDir(pub(in crate::control) PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// How many files in `dir` have names starting with `prefix`.
    pub(in crate::control) fn files_starting(dir: &Path, prefix: &str) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .count()
    }

    fn dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("vswitch-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn net(name: &str, subnet: &str) -> Record {
        Record::Network {
            spec: NetworkCreate::flat(name, subnet),
        }
    }

    fn names(p: &Persisted) -> Vec<&str> {
        p.networks.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn changes_survive_a_reopen_and_a_compaction() {
        let d = dir("reopen");
        let mut s = Store::open(&d).unwrap().store;
        s.append(&[net("a", "10.1.0.0/24"), net("b", "10.2.0.0/24")])
            .unwrap();
        s.append(&[Record::Link {
            a: "b".into(),
            b: "a".into(),
            linked: true,
        }])
        .unwrap();
        let l = Store::open(&d).unwrap();
        assert_eq!(names(&l.state), ["a", "b"]);
        assert_eq!(l.state.links, [("a".to_string(), "b".to_string())]);
        let mut s = l.store;
        let snap = l.state;
        s.compact(snap);
        s.append(&[Record::NetworkRm { name: "a".into() }]).unwrap();
        s.settle();
        let l = Store::open(&d).unwrap();
        assert_eq!(names(&l.state), ["b"]);
        assert!(l.state.links.is_empty(), "links go with the network");
        let files: Vec<_> = journals(&d).unwrap().into_iter().map(|j| j.0).collect();
        assert_eq!(files, [1], "the compacted journal is removed");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_next_append_is_whole() {
        let d = dir("torn");
        let mut s = Store::open(&d).unwrap().store;
        s.append(&[net("a", "10.1.0.0/24")]).unwrap();
        let j = s.journal_path();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(br#"{"op":"network","spec":{"na"#).unwrap();
        drop(f);
        let mut s = Store::open(&d).unwrap().store;
        s.append(&[net("b", "10.2.0.0/24")]).unwrap();
        assert_eq!(names(&Store::open(&d).unwrap().state), ["a", "b"]);
    }

    #[test]
    fn an_unreadable_snapshot_is_kept_beside_earlier_copies() {
        let d = dir("bad");
        for i in 0..(BAD_KEPT + 2) {
            std::fs::write(d.join("state.json"), format!("{{ broken {i}")).unwrap();
            let l = Store::open(&d).unwrap();
            assert!(l.state.networks.is_empty());
        }
        let mut bad: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with("state.json.bad-"))
            .collect();
        bad.sort();
        assert_eq!(bad.len(), BAD_KEPT, "{bad:?}");
        let newest = std::fs::read_to_string(d.join(bad.last().unwrap())).unwrap();
        assert_eq!(newest, format!("{{ broken {}", BAD_KEPT + 1));
    }

    #[test]
    fn an_unreadable_record_is_skipped_and_the_rest_replayed() {
        let d = dir("skip");
        std::fs::write(
            d.join("journal.0"),
            format!(
                "{}\nnot json\n{}\n",
                serde_json::to_string(&net("a", "10.1.0.0/24")).unwrap(),
                serde_json::to_string(&net("b", "10.2.0.0/24")).unwrap()
            ),
        )
        .unwrap();
        let l = Store::open(&d).unwrap();
        assert_eq!(names(&l.state), ["a", "b"]);
        assert_eq!(files_starting(&d, "journal.0.bad-"), 1);
    }

    #[test]
    fn a_snapshot_without_a_journal_field_is_read_as_before() {
        let d = dir("old");
        std::fs::write(
            d.join("state.json"),
            r#"{"networks":[{"name":"a","subnet":"10.1.0.0/24"}],"endpoints":[]}"#,
        )
        .unwrap();
        assert_eq!(names(&Store::open(&d).unwrap().state), ["a"]);
    }
}
