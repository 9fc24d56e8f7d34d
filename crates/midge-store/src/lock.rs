//! The data directory's lock: one process at a time per data directory, even when the
//! directory is removed and made again while its holder runs, and the check that a
//! running store's directory is still the one it opened.
//!
//! fjall's own lock (`flock` on `DIR/lock`) is tied to the lock file's inode: once the
//! directory is replaced, a second process finds a new, unlocked `lock` file and opens
//! the store the first one still writes to. So the holder also binds an abstract Unix
//! socket named after the directory's canonical path (Linux): it is no file, nothing can
//! remove it, the kernel frees it when the holder exits (even on SIGKILL), and a process
//! that finds it taken connects to it and learns the holder's pid (`SO_PEERCRED`). See
//! `docs/design/store-faults.md`.

use crate::engine::EngineError;
use std::path::{Path, PathBuf};

/// Held while a store is open; released on drop (or when the process ends).
pub struct StoreLock {
    /// The directory as it was named at open, and what it was then.
    dir: PathBuf,
    identity: Identity,
    /// The directory itself, held open: its inode cannot be freed and its number given to
    /// a new directory of the same name meanwhile (ext4 does that at once), and its link
    /// count says whether it was removed.
    handle: std::fs::File,
    /// When the directory's name was last looked up (milliseconds since `opened`): the
    /// lookup walks the path, so it is done at most every [`NAME_CHECK_EVERY`].
    name_checked_ms: std::sync::atomic::AtomicU64,
    opened: std::time::Instant,
    #[cfg(target_os = "linux")]
    socket: Option<std::os::unix::net::UnixListener>,
}

/// How often [`StoreLock::check`] looks up the directory by name. A removed directory is
/// seen at every check through its open handle (link count 0), which costs one `fstat`;
/// only a directory renamed away, with another one put in its place, needs the name, so
/// that case is seen within this time.
const NAME_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What makes a directory itself, not just its name: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

impl StoreLock {
    /// Takes the lock of the existing directory `dir`. [`EngineError::Locked`] names the
    /// holder's pid when another process has it.
    pub fn acquire(dir: &Path) -> Result<StoreLock, EngineError> {
        let io = |what: &str, e: std::io::Error| {
            EngineError::Io(format!("{}: {what}: {e}", dir.display()))
        };
        let handle = std::fs::File::open(dir).map_err(|e| io("cannot open the directory", e))?;
        let identity = handle
            .metadata()
            .map(|m| Identity::of(&m))
            .map_err(|e| io("cannot read the directory", e))?;
        #[cfg(target_os = "linux")]
        let socket = {
            let canonical = std::fs::canonicalize(dir).map_err(|e| io("cannot resolve", e))?;
            match linux::bind(&canonical) {
                Ok(Some(socket)) => Some(socket),
                Ok(None) => return Err(EngineError::Locked(linux::holder(&canonical))),
                // Somewhere without Unix sockets (a sandbox): fjall's lock file is left.
                Err(e) => {
                    tracing::warn!(
                        store = %dir.display(),
                        "no lock that survives the directory being replaced: {e}"
                    );
                    None
                }
            }
        };
        Ok(StoreLock {
            dir: dir.to_path_buf(),
            identity,
            handle,
            name_checked_ms: std::sync::atomic::AtomicU64::new(0),
            opened: std::time::Instant::now(),
            #[cfg(target_os = "linux")]
            socket,
        })
    }

    /// Fails with [`EngineError::Gone`] once `dir` no longer names the directory that was
    /// locked (removed, or removed and made again): what is written from then on lands in
    /// files no later start will find. Cheap: one `fstat`, and every
    /// [`NAME_CHECK_EVERY`] one `stat` of the path (a directory renamed away).
    pub fn check(&self) -> Result<(), EngineError> {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::Ordering;
        let removed = self.handle.metadata().is_ok_and(|m| m.nlink() == 0);
        let now_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.name_checked_ms.load(Ordering::Relaxed);
        let every = NAME_CHECK_EVERY.as_millis() as u64;
        if !removed && last != 0 && now_ms.saturating_sub(last) < every {
            return Ok(());
        }
        self.name_checked_ms.store(now_ms.max(1), Ordering::Relaxed);
        match std::fs::metadata(&self.dir) {
            Ok(now) if !removed && Identity::of(&now) == self.identity => Ok(()),
            Ok(_) => Err(gone(&self.dir, "another directory has its name now")),
            Err(e) => Err(gone(&self.dir, &e.to_string())),
        }
    }

    /// Forgets the connections of processes that asked who holds the lock, so that the
    /// socket's backlog never fills (call it now and then).
    pub fn answer_queries(&self) {
        #[cfg(target_os = "linux")]
        if let Some(socket) = &self.socket {
            while socket.accept().is_ok() {}
        }
    }
}

fn gone(dir: &Path, now: &str) -> EngineError {
    EngineError::Gone(format!(
        "the data directory {} was removed or replaced while the store was open ({now}); \
         state is no longer being saved (restart the broker to save it again)",
        dir.display()
    ))
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::path::Path;

    /// The socket's name: a hash of the canonical path (a name holds at most 107 bytes),
    /// fixed across builds (xxh3, not the standard library's hasher).
    fn name(canonical: &Path) -> String {
        let hash = xxhash_rust::xxh3::xxh3_128(canonical.as_os_str().as_bytes());
        format!("midge-store:{hash:032x}")
    }

    /// Binds the lock socket; `None` when another process holds it.
    pub fn bind(canonical: &Path) -> std::io::Result<Option<UnixListener>> {
        let addr = SocketAddr::from_abstract_name(name(canonical).as_bytes())?;
        match UnixListener::bind_addr(&addr) {
            Ok(l) => {
                // Drained without waiting (`answer_queries`).
                l.set_nonblocking(true)?;
                Ok(Some(l))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Says who holds the lock: "pid N", from the credentials the kernel keeps for the
    /// listening socket. The connection does not wait (a full backlog leaves the pid
    /// unknown).
    pub fn holder(canonical: &Path) -> String {
        use rustix::net::{
            connect, socket_with, sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
        };
        let asked = (|| {
            let fd = socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            let addr = SocketAddrUnix::new_abstract_name(name(canonical).as_bytes())?;
            connect(&fd, &addr)?;
            sockopt::socket_peercred(&fd)
        })();
        match asked {
            Ok(cred) => format!("pid {}", cred.pid.as_raw_nonzero()),
            Err(e) => format!("pid unknown: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let held = StoreLock::acquire(tmp.path()).unwrap();
        let second = StoreLock::acquire(tmp.path()).err();
        let pid = std::process::id();
        assert_eq!(second, Some(EngineError::Locked(format!("pid {pid}"))));
        held.answer_queries();
        drop(held);
        assert!(StoreLock::acquire(tmp.path()).is_ok());
    }

    #[test]
    fn the_lock_survives_the_directory_being_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let held = StoreLock::acquire(&dir).unwrap();
        assert_eq!(held.check(), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(held.check(), Err(EngineError::Gone(_))));
        std::fs::create_dir(&dir).unwrap();
        let Err(EngineError::Gone(what)) = held.check() else {
            panic!("a replaced directory passes the check");
        };
        assert!(what.contains("was removed or replaced"), "{what}");
        assert!(matches!(
            StoreLock::acquire(&dir),
            Err(EngineError::Locked(_))
        ));
    }

    /// A directory renamed away keeps its links: only its name tells, and the name is
    /// looked up at most every `NAME_CHECK_EVERY`; the rename is seen within that.
    #[test]
    fn a_directory_renamed_away_and_replaced_fails_the_check_soon() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let held = StoreLock::acquire(&dir).unwrap();
        assert_eq!(held.check(), Ok(()));
        let moved = std::time::Instant::now();
        std::fs::rename(&dir, tmp.path().join("data.old")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        loop {
            if let Err(EngineError::Gone(_)) = held.check() {
                break;
            }
            assert!(
                moved.elapsed() < NAME_CHECK_EVERY * 5,
                "the replaced directory still passes the check"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_path_through_a_symlink_is_the_same_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let _held = StoreLock::acquire(&dir).unwrap();
        assert!(matches!(
            StoreLock::acquire(&link),
            Err(EngineError::Locked(_))
        ));
    }
}
