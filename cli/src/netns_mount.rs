//! Naming a network namespace that a container runtime made (a path such as
//! `/proc/PID/ns/net` or Docker's sandbox key) in `/run/netns`, as `ip netns attach` does, so
//! that vswitchd can attach it by name; and taking that name away again. Shared by the CNI
//! plugin and the Docker driver.

use std::path::Path;

/// Where named network namespaces live (`ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// `mount --bind PATH /run/netns/NAME`, unless it is there already. The error is one line.
pub fn bind(path: &str, name: &str) -> Result<(), String> {
    let target = Path::new(NETNS_DIR).join(name);
    if !Path::new(path).exists() {
        return Err(format!("network namespace {path} does not exist"));
    }
    if is_mount_of(path, &target) {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| format!("create {NETNS_DIR}: {e}"))?;
    std::fs::write(&target, b"").map_err(|e| format!("create {}: {e}", target.display()))?;
    let out = std::process::Command::new("mount")
        .arg("--bind")
        .arg(path)
        .arg(&target)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&target);
        return Err(format!(
            "mount --bind {path} {} failed: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether `target` is already a mount of the namespace `path` names (same inode).
fn is_mount_of(path: &str, target: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), std::fs::metadata(target)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Undo [`bind`]: unmount and remove `/run/netns/NAME`, and the resolver directory vswitchd
/// may have left for it in `/etc/netns`.
pub fn unbind(name: &str) {
    let target = Path::new(NETNS_DIR).join(name);
    let _ = std::process::Command::new("umount").arg(&target).output();
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_dir(Path::new("/etc/netns").join(name));
}
