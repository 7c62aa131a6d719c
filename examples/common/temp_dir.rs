//! A temporary folder removed when dropped, shared by the benchmark
//! examples (each includes this file with `#[path]`).

use std::fs;
use std::io;
use std::path::PathBuf;

/// A temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh folder under the system temp dir, named after `label`, this
    /// process and the clock.
    pub fn new(label: &str) -> io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("{label}-{}-{nanos:09}", std::process::id()));
        fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
