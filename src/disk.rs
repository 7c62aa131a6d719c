//! Free space on the filesystem that holds the output folder, and the
//! floor below which the server takes no PDF job (`MIN_FREE_DISK_MB`).
//!
//! [`FreeSpace`] reads `statvfs(2)` (`f_bavail * f_frsize`: the bytes an
//! unprivileged process may still write) and keeps the reading for
//! [`READING_TTL`], so a burst of submits costs one system call a second,
//! not one each. The local page store owns one (the path stays inside
//! `storage`); a store without a local filesystem has no reading, and the
//! floor does not apply to it. [`Shortage`] is what a reading below the
//! floor turns into: the `disk` check of `/readyz` and the `503
//! insufficient_storage` of a PDF submit.
//!
//! The floor is a cheap early refusal, not a guarantee: jobs already
//! running, or another process, may still fill the disk, and a page that
//! cannot be written then fails its job with `507` (see
//! [`crate::queue::JobError::StorageFull`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long one `statvfs` reading is used before the next.
pub const READING_TTL: Duration = Duration::from_secs(1);

/// `Retry-After` of a submit refused for lack of space: space comes back
/// when results expire (the retention sweep runs at most every 30 s) or
/// when an operator frees it, neither on a schedule this server knows.
pub const RETRY_AFTER_SECS: u64 = 30;

const MB: u64 = 1024 * 1024;

/// Bytes an unprivileged process may still write on the filesystem
/// holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call,
    // and `stat` is a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // The field types differ by platform.
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// A value read at most once per `ttl`, on a clock the caller passes in
/// (so tests choose the instants).
#[derive(Debug)]
pub struct Cached {
    ttl: Duration,
    last: Mutex<Option<(Instant, u64)>>,
}

impl Cached {
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            last: Mutex::new(None),
        }
    }

    /// The reading taken less than `ttl` before `now`, else a new one from
    /// `read`. A failed read is not kept: the next call tries again.
    pub fn get(&self, now: Instant, read: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
        let mut last = self.last.lock();
        if let Some((at, value)) = *last {
            if now.saturating_duration_since(at) < self.ttl {
                return Ok(value);
            }
        }
        let value = read()?;
        *last = Some((now, value));
        Ok(value)
    }
}

/// Free space of the filesystem holding one folder, read at most once per
/// [`READING_TTL`].
#[derive(Debug)]
pub struct FreeSpace {
    path: PathBuf,
    cache: Cached,
}

impl FreeSpace {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FreeSpace {
            path: path.into(),
            cache: Cached::new(READING_TTL),
        }
    }

    /// Free bytes, or `None` when the filesystem cannot be asked (logged):
    /// an unknown reading refuses nothing, and a write that then fails for
    /// lack of space fails its own job.
    pub fn bytes(&self) -> Option<u64> {
        match self.cache.get(Instant::now(), || free_bytes(&self.path)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot read the free space: {e}");
                None
            }
        }
    }
}

/// Free space below the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortage {
    pub free_bytes: u64,
    pub floor_bytes: u64,
}

impl Shortage {
    /// The shortage, if `free` bytes (`None`: not applicable or unknown)
    /// are below `floor_mb` MiB; a floor of 0 turns the check off.
    pub fn of(free: Option<u64>, floor_mb: u64) -> Option<Shortage> {
        let floor_bytes = floor_mb.saturating_mul(MB);
        let free_bytes = free?;
        (floor_mb > 0 && free_bytes < floor_bytes).then_some(Shortage {
            free_bytes,
            floor_bytes,
        })
    }
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} MB free on the output folder's filesystem, below the floor of {} MB (MIN_FREE_DISK_MB)",
            self.free_bytes / MB,
            self.floor_bytes / MB
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_reading_is_kept_for_its_ttl_and_a_failed_one_is_not() {
        let cache = Cached::new(Duration::from_secs(1));
        let reads = Cell::new(0u64);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(reads.get() * 100)
        };
        let t0 = Instant::now();
        assert_eq!(cache.get(t0, read).unwrap(), 100);
        let later = t0 + Duration::from_millis(999);
        assert_eq!(cache.get(later, read).unwrap(), 100, "within the ttl");
        assert_eq!(reads.get(), 1, "one statvfs for the burst");
        let next = t0 + Duration::from_secs(1);
        assert_eq!(cache.get(next, read).unwrap(), 200, "read again at the ttl");
        let failing = || Err(io::Error::other("gone"));
        let after = next + Duration::from_secs(1);
        assert!(cache.get(after, failing).is_err());
        assert_eq!(cache.get(after, read).unwrap(), 300, "errors are not kept");
    }

    #[test]
    fn the_free_space_of_a_real_folder_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let free = FreeSpace::new(dir.path());
        assert!(free.bytes().is_some_and(|b| b > 0));
        assert!(FreeSpace::new("/no/such/folder").bytes().is_none());
    }

    #[test]
    fn a_shortage_is_free_space_below_a_nonzero_floor() {
        let floor_mb = 512;
        assert_eq!(Shortage::of(Some(512 * MB), floor_mb), None);
        let short = Shortage::of(Some(100 * MB), floor_mb).unwrap();
        assert_eq!(short.floor_bytes, 512 * MB);
        let text = short.to_string();
        assert!(
            text.contains("100 MB") && text.contains("512 MB") && text.contains("MIN_FREE_DISK_MB"),
            "{text}"
        );
        assert_eq!(Shortage::of(Some(0), 0), None, "0 turns the check off");
        assert_eq!(Shortage::of(None, floor_mb), None, "no reading, no refusal");
        assert!(Shortage::of(Some(u64::MAX - 1), u64::MAX).is_some());
    }
}
