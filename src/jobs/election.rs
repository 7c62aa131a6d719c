//! Which instance is the primary, and which instances are alive, among
//! servers sharing one `OUTPUT_DIR` on one host.
//!
//! Both answers come from `flock(2)` locks, because the kernel releases a
//! flock the moment the process holding it dies, however it dies (SIGKILL,
//! OOM killer, panic): no heartbeats, no stale leases, no clock.
//!
//! * [`Election`]: every instance waits for an exclusive lock on one file
//!   (e.g. `OUTPUT_DIR/primary.lock`) on a thread of its own; the one holding
//!   it is the primary and runs the once-per-folder work (the cleanup of
//!   expired jobs). When the primary dies, the kernel hands the lock to one
//!   of the waiters at once.
//! * [`InstanceLock`]: each instance holds an exclusive lock on
//!   `<dir>/<instance_id>.lock` for as long as it runs, so another instance
//!   can tell whether the owner of a job is alive ([`instance_is_dead`]) and
//!   take its unfinished jobs over if not.
//!
//! A flock belongs to the open file description, not to the process: two
//! opens of the same file in one process conflict like two processes do
//! (which the tests use to stand in for several instances), and a child
//! that inherits the descriptor keeps the lock alive after its parent dies.
//! The server spawns renderer processes, so it matters that std opens every
//! file with `O_CLOEXEC`: children never inherit these locks.
//!
//! Caveats: the lock files must never be deleted by hand while instances
//! run (a new file means a second lock, hence two primaries); the election
//! file must not live in the instance lock folder (housekeeping would
//! treat it as an instance's); and instances on different hosts sharing a
//! network filesystem are only as safe as that filesystem's locks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Holds, or waits for, an exclusive flock on one file; this instance is
/// the primary while it holds it.
pub struct Election {
    shared: Arc<Shared>,
    role: watch::Receiver<bool>,
}

/// What the campaign thread and the `Election` handle share.
struct Shared {
    path: PathBuf,
    seat: Mutex<Seat>,
    /// True while this instance is the primary.
    role: watch::Sender<bool>,
}

struct Seat {
    resigned: bool,
    /// The locked file while primary; dropping it closes the descriptor,
    /// which releases the lock.
    held: Option<File>,
}

impl Shared {
    fn seat(&self) -> MutexGuard<'_, Seat> {
        self.seat.lock()
    }
}

impl Election {
    /// Opens (or creates) `path` and starts a thread that blocks in
    /// `flock(LOCK_EX)` until this instance gets the lock; the kernel wakes
    /// it as soon as the holder releases the lock or dies, so there is no
    /// polling. It then becomes the primary and stays so until
    /// [`Election::resign`] or drop.
    ///
    /// The file is opened here rather than on the thread so that a path that
    /// cannot be opened is an error at startup, not a silent standby.
    pub fn start(path: PathBuf) -> io::Result<Election> {
        let file = open_lock_file(&path)?;
        let (role_tx, role) = watch::channel(false);
        let shared = Arc::new(Shared {
            path,
            seat: Mutex::new(Seat {
                resigned: false,
                held: None,
            }),
            role: role_tx,
        });
        let campaign = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("primary-election".into())
            .spawn(move || campaign_for_primary(&campaign, file))?;
        Ok(Election { shared, role })
    }

    pub fn is_primary(&self) -> bool {
        *self.role.borrow()
    }

    /// A receiver whose value turns true when this instance becomes primary
    /// (and false if it resigns).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.role.clone()
    }

    /// Gives the role up, or gives up waiting for it. A primary closes the
    /// lock file so another instance takes over at once. A standby's thread
    /// stays blocked in `flock` (nothing interrupts it), and when it gets the
    /// lock it sees the resignation, closes the file and exits without ever
    /// becoming primary.
    pub fn resign(&self) {
        let mut seat = self.shared.seat();
        seat.resigned = true;
        if let Some(file) = seat.held.take() {
            // Role first, lock second, so this instance never claims to be
            // primary once another one may be.
            self.shared.role.send_replace(false);
            drop(file);
            tracing::info!(
                path = %self.shared.path.display(),
                "this instance resigned as the primary"
            );
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.resign();
    }
}

/// The election thread: waits for the lock, then takes the role unless the
/// instance resigned meanwhile.
fn campaign_for_primary(shared: &Shared, file: File) {
    if let Err(e) = flock(&file, libc::LOCK_EX) {
        tracing::error!(
            path = %shared.path.display(),
            "cannot wait for the primary lock, this instance stays a standby: {e}"
        );
        return;
    }
    let mut seat = shared.seat();
    if seat.resigned {
        // Returning drops `file`, which releases the lock for the others.
        return;
    }
    seat.held = Some(file);
    shared.role.send_replace(true);
    drop(seat);
    tracing::info!(path = %shared.path.display(), "this instance is now the primary");
}

/// Marks this instance alive while held: an exclusive flock on
/// `<dir>/<instance_id>.lock`. Dropping it removes the file and releases the
/// lock.
pub struct InstanceLock {
    id: String,
    path: PathBuf,
    file: File,
}

/// How many times [`InstanceLock::acquire`] tries before deciding that the
/// lock is held by a live instance, and how long it waits between tries.
/// A probe ([`instance_is_dead`], [`remove_dead_instance_locks`]) holds the
/// lock for microseconds; flock has no timed wait, hence the short retries.
const ACQUIRE_TRIES: u32 = 20;
const ACQUIRE_PAUSE: Duration = Duration::from_millis(5);

impl InstanceLock {
    /// Creates and locks `<dir>/<instance_id>.lock`. Fails if the id cannot
    /// be a file name, or if a live process already holds that id.
    pub fn acquire(dir: &Path, instance_id: &str) -> io::Result<InstanceLock> {
        let path = instance_lock_path(dir, instance_id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("instance id {instance_id:?} cannot be used as a file name"),
            )
        })?;
        for _ in 0..ACQUIRE_TRIES {
            let file = open_lock_file(&path)?;
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACQUIRE_PAUSE);
                    continue;
                }
                Err(e) => return Err(e),
            }
            // The primary's housekeeping may have probed and removed the file
            // between our open and our lock; a lock on a removed file marks
            // nothing, so start again with a fresh one.
            if same_file(&file, &path) {
                return Ok(InstanceLock {
                    id: instance_id.to_owned(),
                    path,
                    file,
                });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "instance id {instance_id:?} is in use: a live process holds {}",
                path.display()
            ),
        ))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Removed while still locked, and only if it is still our file, so
        // nobody ever sees our file unlocked; the lock goes with `file` when
        // the fields drop.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// True if no live process holds `<dir>/<instance_id>.lock`: it was never
/// created, or its holder exited or died. Probes with a non-blocking lock on
/// a fresh descriptor and releases it at once. When it cannot tell (an I/O
/// error), it answers false: taking over a live instance's jobs would run
/// them twice, while leaving a dead one's jobs costs only a delay.
pub fn instance_is_dead(dir: &Path, instance_id: &str) -> bool {
    let Some(path) = instance_lock_path(dir, instance_id) else {
        // No instance can have locked a file under this name.
        return true;
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot probe an instance lock: {e}");
            return false;
        }
    };
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        // Dropping `file` releases the probe's lock.
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot probe an instance lock: {e}");
            false
        }
    }
}

/// Removes the `*.lock` files in `dir` that no live process holds, and
/// returns how many it removed. Housekeeping for the primary; `dir` must
/// hold only instance lock files.
pub fn remove_dead_instance_locks(dir: &Path) -> usize {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list instance locks: {e}");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_lock_file = path.extension().is_some_and(|ext| ext == "lock")
            && entry.file_type().is_ok_and(|t| t.is_file());
        if !is_lock_file {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            // Held by a live instance, or we cannot tell: keep it.
            continue;
        }
        // Removed while we hold the lock: an instance starting under this
        // id that opened the file just before gets the lock after us, sees
        // the file is gone (see `acquire`) and creates a new one.
        if same_file(&file, &path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `<dir>/<id>.lock`, or None if `id` is not a plain file name.
fn instance_lock_path(dir: &Path, id: &str) -> Option<PathBuf> {
    let plain = !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\0']);
    plain.then(|| dir.join(format!("{id}.lock")))
}

/// Opens or creates a lock file. std sets `O_CLOEXEC`, which keeps the lock
/// out of spawned children (see the module comment). Never truncated: the
/// content does not matter, the open file description does.
fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// `flock(2)` on the file's descriptor, retried when a signal interrupts it.
fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor, which `file` owns and
        // keeps open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether `path` still names the file `file` has open.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// The singleton lease: at most one instance holds it at a time, and the
/// holder runs the singletons (removing expired results). A cluster's
/// lease is a key with a TTL in a shared store.
pub trait Lease: Send + Sync + 'static {
    fn is_held(&self) -> bool;
    /// Gives the lease up (at shutdown), so another instance takes it now.
    fn resign(&self);
}

impl Lease for Election {
    fn is_held(&self) -> bool {
        self.is_primary()
    }
    fn resign(&self) {
        Election::resign(self)
    }
}

/// Which instances are alive: this one is while it holds its mark, and
/// another one's unfinished jobs may be claimed once it is dead.
pub trait Membership: Send + Sync + 'static {
    /// This instance's id.
    fn id(&self) -> &str;
    fn is_dead(&self, instance_id: &str) -> bool;
    /// Forgets dead instances' marks (by the lease holder).
    fn prune(&self);
}

/// Membership by lock files in one folder: [`InstanceLock`] per instance.
pub struct LockFiles {
    dir: PathBuf,
    lock: InstanceLock,
}

impl LockFiles {
    /// Marks a new instance alive in `dir`.
    pub fn join(dir: &Path) -> io::Result<LockFiles> {
        let id = uuid::Uuid::new_v4().to_string();
        Ok(LockFiles {
            dir: dir.to_path_buf(),
            lock: InstanceLock::acquire(dir, &id)?,
        })
    }
}

impl Membership for LockFiles {
    fn id(&self) -> &str {
        self.lock.id()
    }
    fn is_dead(&self, instance_id: &str) -> bool {
        instance_is_dead(&self.dir, instance_id)
    }
    fn prune(&self) {
        remove_dead_instance_locks(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use tokio::time::timeout;

    /// Long enough for any real hand-over, short enough for a failing test.
    const HANDOVER: Duration = Duration::from_secs(5);

    /// How long a standby is watched to check that it does not take the
    /// role while the lock is held. Not a wait for an event: nothing
    /// signals "still standby".
    const STAYS_STANDBY: Duration = Duration::from_millis(200);

    fn primary_lock(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("primary.lock")
    }

    /// Two instances on one lock: `a` the primary, `b` waiting.
    async fn primary_and_standby(dir: &tempfile::TempDir) -> (Election, Election) {
        let a = Election::start(primary_lock(dir)).expect("a starts");
        assert!(becomes_primary(&a).await);
        let b = Election::start(primary_lock(dir)).expect("b starts");
        (a, b)
    }

    async fn becomes_primary(election: &Election) -> bool {
        let mut role = election.subscribe();
        let became_primary = timeout(HANDOVER, role.wait_for(|primary| *primary)).await;
        became_primary.is_ok_and(|changed| changed.is_ok())
    }

    async fn stays_standby(election: &Election) -> bool {
        let mut role = election.subscribe();
        let became_primary = timeout(STAYS_STANDBY, role.wait_for(|primary| *primary)).await;
        became_primary.is_err()
    }

    #[tokio::test]
    async fn two_elections_on_one_file_make_exactly_one_primary() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let a = Election::start(primary_lock(&dir)).expect("a starts");
        let b = Election::start(primary_lock(&dir)).expect("b starts");
        let (mut role_a, mut role_b) = (a.subscribe(), b.subscribe());
        let someone = timeout(HANDOVER, async {
            tokio::select! {
                _ = role_a.wait_for(|p| *p) => {}
                _ = role_b.wait_for(|p| *p) => {}
            }
        })
        .await;
        assert!(someone.is_ok(), "one of the two became primary");
        assert_ne!(a.is_primary(), b.is_primary(), "exactly one is primary");
    }

    #[tokio::test]
    async fn resigning_hands_the_role_to_the_standby() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let a = Election::start(primary_lock(&dir)).expect("a starts");
        assert!(
            becomes_primary(&a).await,
            "the first instance becomes primary"
        );
        let b = Election::start(primary_lock(&dir)).expect("b starts");
        assert!(stays_standby(&b).await, "b waits while a holds the lock");

        a.resign();
        assert!(!a.is_primary(), "a says so at once");
        assert!(becomes_primary(&b).await, "b takes over");
        assert!(!a.is_primary(), "a does not come back");
    }

    #[tokio::test]
    async fn dropping_the_primary_hands_over_and_a_late_instance_stays_standby() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let (a, b) = primary_and_standby(&dir).await;
        drop(a);
        assert!(becomes_primary(&b).await, "b takes over from the dropped a");

        let c = Election::start(primary_lock(&dir)).expect("c starts");
        assert!(stays_standby(&c).await, "c started late and waits");
        assert!(b.is_primary(), "b keeps the role");
        drop(b);
        assert!(becomes_primary(&c).await, "c was waiting and takes over");
    }

    #[tokio::test]
    async fn a_standby_that_resigned_never_becomes_primary() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let (a, b) = primary_and_standby(&dir).await;
        let role_b = b.subscribe();
        b.resign();
        let c = Election::start(primary_lock(&dir)).expect("c starts");
        drop(a);
        // b's thread may get the lock first; it must pass it straight on.
        assert!(
            becomes_primary(&c).await,
            "c takes over, b does not keep it"
        );
        assert!(!*role_b.borrow(), "b is not primary");
        assert!(!role_b.has_changed().unwrap_or(true), "b never was");
    }

    #[test]
    fn an_election_on_an_unopenable_path_fails_to_start() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let err = Election::start(dir.path().join("missing-folder").join("primary.lock"))
            .err()
            .expect("start fails");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_primary_moves_here_when_another_process_holding_it_is_killed() {
        let flock_bin = Path::new("/usr/bin/flock");
        if !flock_bin.exists() {
            println!("skipped: {} is not installed", flock_bin.display());
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir is created");
        // `-o` closes the lock in the shell flock runs, so only the flock
        // process itself holds it; the shell says when the lock is taken.
        let mut other = Command::new(flock_bin)
            .arg("-o")
            .arg(primary_lock(&dir))
            .args(["-c", "echo locked; exec sleep 30"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("flock starts");
        let mut line = String::new();
        BufReader::new(other.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("flock's child speaks");
        assert_eq!(line.trim(), "locked", "the other process holds the lock");

        let here = Election::start(primary_lock(&dir)).expect("election starts");
        assert!(stays_standby(&here).await, "the other process is primary");

        let pid = libc::pid_t::try_from(other.id()).expect("pid fits");
        // SAFETY: plain syscalls on the process (group) this test spawned.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "flock killed");
        let took_over = becomes_primary(&here).await;
        // SAFETY: as above; ends the orphaned `sleep` of the same group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = other.wait();
        assert!(took_over, "this instance took over within {HANDOVER:?}");
    }

    #[test]
    fn a_held_instance_lock_means_alive_and_a_released_one_dead() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let lock = InstanceLock::acquire(dir.path(), "instance-1").expect("lock acquired");
        assert_eq!(lock.id(), "instance-1");
        assert!(
            !instance_is_dead(dir.path(), "instance-1"),
            "held, so alive"
        );
        // Probing releases at once: the holder is still seen alive after.
        assert!(!instance_is_dead(dir.path(), "instance-1"));

        drop(lock);
        assert!(
            instance_is_dead(dir.path(), "instance-1"),
            "released, so dead"
        );
        assert!(
            !dir.path().join("instance-1.lock").exists(),
            "a clean exit removes its file"
        );
        assert!(
            instance_is_dead(dir.path(), "never-started"),
            "never created"
        );
    }

    #[test]
    fn an_instance_id_held_by_a_live_instance_cannot_be_acquired_again() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let _first = InstanceLock::acquire(dir.path(), "same").expect("lock acquired");
        let err = InstanceLock::acquire(dir.path(), "same")
            .err()
            .expect("second acquire fails");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");

        for bad in ["", "..", "a/b"] {
            let err = InstanceLock::acquire(dir.path(), bad)
                .err()
                .expect("not a file name");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn housekeeping_removes_only_the_lock_files_of_dead_instances() {
        let dir = tempfile::tempdir().expect("temp dir is created");
        let live = InstanceLock::acquire(dir.path(), "live").expect("lock acquired");
        // What a killed instance leaves behind: its file, unlocked.
        std::fs::write(dir.path().join("killed.lock"), b"").expect("file written");
        std::fs::write(dir.path().join("notes.txt"), b"").expect("file written");

        assert_eq!(
            remove_dead_instance_locks(dir.path()),
            1,
            "only killed.lock"
        );
        assert!(!dir.path().join("killed.lock").exists());
        assert!(dir.path().join("live.lock").exists(), "the live lock stays");
        assert!(dir.path().join("notes.txt").exists(), "other files stay");
        assert!(!instance_is_dead(dir.path(), live.id()), "still alive");
    }
}
