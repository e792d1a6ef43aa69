//! Durable file replacement, the one way the switch writes its files (the state file, saved
//! connections, namespaces' resolv.conf): a reader sees the old content or the new, never a
//! part, and the new content is on disk when the call returns.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

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

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("vswitch-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        write_atomic(&f, b"one").unwrap();
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
        let dir = std::env::temp_dir().join(format!("vswitch-persist-f-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        write_atomic(&f, b"old").unwrap();
        // The temporary's name is taken by a directory: the write fails before the rename.
        std::fs::create_dir(dir.join("state.json.vswitchd-tmp")).unwrap();
        assert!(write_atomic(&f, b"new").is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
