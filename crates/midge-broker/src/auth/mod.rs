//! Authentication and authorisation with Mosquitto's security files: the `password_file`
//! ([`PasswordFile`], checked at CONNECT through [`Authenticator`]) and the `acl_file`
//! ([`AclFile`], checked on PUBLISH, SUBSCRIBE and each delivery through [`Authorizer`]).
//!
//! Both files load through pure functions of their content, so a reload on SIGHUP is
//! "load again, swap on success, keep the old rules on error": [`Reloadable`] does that.

pub mod acl;
pub mod password;
pub mod scram;

pub use acl::{AclFile, AllowAll, ClientInfo, DenyAll, SubscribeCheck};
pub use password::{HashKind, PasswordFile, PasswordHash};

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The outcome of checking a client's CONNECT credentials.
///
/// 3.1.1 clients get "not authorised" (return code 5) for a wrong or unknown username or
/// password, as Mosquitto 2.0 answers. MQTT 5 clients get 0x86 Bad User Name or Password,
/// the code the specification gives for it (Mosquitto 2.0.11 sends 0x87 Not authorized:
/// listed in docs/conformance.md, "Deliberate differences"); an anonymous client refused by
/// `allow_anonymous false` gets 0x87 in both brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// The credentials are valid.
    Allowed,
    /// The client sent no username: the listener's `allow_anonymous` decides (see
    /// [`AuthResult::with_anonymous`]).
    Anonymous,
    /// Unknown user, missing password or wrong password.
    BadCredentials,
    /// Known credentials, but this client may not connect.
    NotAuthorized,
}

impl AuthResult {
    /// Resolves [`AuthResult::Anonymous`] with the listener's `allow_anonymous`: allowed when
    /// anonymous access is allowed, [`AuthResult::NotAuthorized`] otherwise (Mosquitto 2
    /// refuses such clients with "not authorised").
    pub fn with_anonymous(self, allow_anonymous: bool) -> AuthResult {
        match self {
            AuthResult::Anonymous if allow_anonymous => AuthResult::Allowed,
            AuthResult::Anonymous => AuthResult::NotAuthorized,
            other => other,
        }
    }

    /// Whether the client may go on.
    pub fn is_allowed(self) -> bool {
        self == AuthResult::Allowed
    }
}

/// Checks CONNECT credentials. Implementations may be slow (password hashing): call from a
/// blocking-friendly context such as `tokio::task::spawn_blocking`.
pub trait Authenticator: Send + Sync {
    /// `password` is raw bytes: MQTT passwords are binary data.
    fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> AuthResult;
}

/// Decides what a connected client may do with topics.
///
/// `can_receive` is asked for every message at delivery time, retained ones included, so
/// implementations must be cheap and must not allocate on the common path.
pub trait Authorizer: Send + Sync {
    /// May `client` publish to the topic name `topic`?
    fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool;
    /// May `client` subscribe to the topic filter `filter` (wildcards allowed)?
    fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool;
    /// May a message published to `topic` be delivered to `client`?
    fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool;
}

/// Why a password or ACL file could not be loaded. Messages name the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads a security file whole; the error names the file.
fn read_file(path: &Path) -> Result<Vec<u8>, AuthFileError> {
    std::fs::read(path).map_err(|source| AuthFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The lines of a security file that say something, as `(line number, trimmed text)`:
/// blank lines and lines starting with `#` are skipped, as Mosquitto skips them in its
/// password and ACL files. A line that is not UTF-8 is an error naming the file and line.
fn content_lines<'a>(
    path: &'a Path,
    content: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str), AuthFileError>> + 'a {
    content
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(index, raw)| {
            let line = index + 1;
            match std::str::from_utf8(raw) {
                Err(_) => Some(Err(AuthFileError::Syntax {
                    path: path.to_owned(),
                    line,
                    message: "line is not valid UTF-8".into(),
                })),
                Ok(text) => {
                    let text = text.trim();
                    (!text.is_empty() && !text.starts_with('#')).then_some(Ok((line, text)))
                }
            }
        })
}

/// The warning for a user listed again in a credentials file, whose first entry is kept
/// (as later Mosquitto 2.0 releases do).
fn duplicate_user_warning(path: &Path, line: usize, username: &str) -> String {
    format!(
        "{}:{line}: duplicate user '{username}', ignoring this entry",
        path.display()
    )
}

/// A security file type that can be (re)loaded from its path.
pub trait LoadFile: Sized {
    fn load_file(path: &Path) -> Result<Self, AuthFileError>;
}

impl LoadFile for PasswordFile {
    fn load_file(path: &Path) -> Result<Self, AuthFileError> {
        PasswordFile::load(path)
    }
}

impl LoadFile for AclFile {
    fn load_file(path: &Path) -> Result<Self, AuthFileError> {
        AclFile::load(path)
    }
}

/// A loaded security file that can be swapped while readers use it.
///
/// Readers hold the lock only for one check; [`Reloadable::reload`] parses the file *before*
/// taking the write lock, so a slow or failing reload never blocks or breaks connected clients.
#[derive(Debug)]
pub struct Reloadable<T> {
    path: PathBuf,
    current: RwLock<Arc<T>>,
}

impl<T: LoadFile> Reloadable<T> {
    /// Loads `path` for the first time.
    pub fn open(path: impl Into<PathBuf>) -> Result<Reloadable<T>, AuthFileError> {
        let path = path.into();
        let value = T::load_file(&path)?;
        Ok(Reloadable::new(path, value))
    }

    /// Loads the file again and swaps it in. On error the old value stays in force and the
    /// error says why (the caller logs it, as Mosquitto does on SIGHUP).
    pub fn reload(&self) -> Result<(), AuthFileError> {
        let value = T::load_file(&self.path)?;
        self.replace(value);
        Ok(())
    }
}

impl<T> Reloadable<T> {
    /// Wraps an already loaded value that came from `path`.
    pub fn new(path: impl Into<PathBuf>, value: T) -> Reloadable<T> {
        Reloadable {
            path: path.into(),
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The file reloads read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A snapshot of the current value (stays valid across later reloads).
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read())
    }

    /// Swaps in a new value.
    pub fn replace(&self, value: T) {
        *self.current.write() = Arc::new(value);
    }
}

impl<T: Authenticator> Authenticator for Reloadable<T> {
    fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> AuthResult {
        // A snapshot, not the guard: hashing is slow and must not hold up a reload.
        self.current().authenticate(username, password, client_id)
    }
}

impl<T: Authorizer> Authorizer for Reloadable<T> {
    fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.current.read().can_publish(client, topic)
    }

    fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        self.current.read().can_subscribe(client, filter)
    }

    fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.current.read().can_receive(client, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_is_resolved_by_allow_anonymous() {
        assert_eq!(
            AuthResult::Anonymous.with_anonymous(true),
            AuthResult::Allowed
        );
        assert_eq!(
            AuthResult::Anonymous.with_anonymous(false),
            AuthResult::NotAuthorized
        );
        assert_eq!(
            AuthResult::BadCredentials.with_anonymous(true),
            AuthResult::BadCredentials
        );
    }

    #[test]
    fn failed_reload_keeps_old_rules() {
        let dir = std::env::temp_dir().join(format!("midge-auth-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acl");
        std::fs::write(&path, "topic read a/#\n").unwrap();
        let acl: Reloadable<AclFile> = Reloadable::open(&path).unwrap();
        let anon = ClientInfo::new("c1", None);
        assert!(acl.can_receive(&anon, "a/b"));

        std::fs::write(&path, "topic bogus a/#\n").unwrap();
        let err = acl.reload().unwrap_err();
        assert!(err.to_string().contains(":1:"), "{err}");
        assert!(
            acl.can_receive(&anon, "a/b"),
            "old rules stay after a failed reload"
        );

        std::fs::write(&path, "topic read b/#\n").unwrap();
        acl.reload().unwrap();
        assert!(!acl.can_receive(&anon, "a/b"));
        assert!(acl.can_receive(&anon, "b/c"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
