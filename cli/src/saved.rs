//! A value the Docker plugin keeps in a JSON file of vswitchd's state directory: every change is
//! written (atomically) before it is answered, or refused and taken back. Docker does not tell a
//! plugin again what it holds after a restart of either daemon, so nothing may live in memory
//! only.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{de::DeserializeOwned, Serialize};

/// A value and the file it is kept in (memory only without a state directory).
#[derive(Debug)]
pub struct Saved<T> {
    path: Option<PathBuf>,
    what: &'static str,
    value: Mutex<T>,
}

impl<T: Clone + PartialEq + Default + Serialize + DeserializeOwned> Saved<T> {
    /// The value kept in `dir/file` (the default when the file does not exist). A file that
    /// cannot be read is an error naming it: starting without what it holds would hand out
    /// again what Docker still holds. `what` names the value in errors.
    pub fn load(dir: Option<&Path>, file: &str, what: &'static str) -> Result<Saved<T>, String> {
        let path = dir.map(|d| d.join(file));
        let value = match &path {
            Some(p) => match std::fs::read(p) {
                Ok(data) => serde_json::from_slice(&data)
                    .map_err(|e| format!("{}: not a {what} file: {e}", p.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
                Err(e) => return Err(format!("{}: {e}", p.display())),
            },
            None => T::default(),
        };
        Ok(Saved {
            path,
            what,
            value: Mutex::new(value),
        })
    }

    /// Apply `f` to the value and write it; when `f` or the write fails, nothing changes.
    pub fn change<R>(&self, f: impl FnOnce(&mut T) -> Result<R, String>) -> Result<R, String> {
        let mut cur = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = cur.clone();
        let out = f(&mut next)?;
        if next != *cur {
            if let Some(path) = &self.path {
                let data = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
                switch::control::write_atomic(path, &data)
                    .map_err(|e| format!("{}: cannot save {}: {e}", self.what, path.display()))?;
            }
            *cur = next;
        }
        Ok(out)
    }

    /// What `f` reads from the value.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.value.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
