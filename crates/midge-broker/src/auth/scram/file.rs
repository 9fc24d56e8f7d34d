//! The SCRAM credentials file: one `username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
//! line per user (RFC 5803's form, the one PostgreSQL stores in `pg_authid.rolpassword`).
//!
//! A separate file from the `password_file` because Mosquitto's hashes cannot give SCRAM
//! keys. Loading is pure, like the password file's, so [`Reloadable`] reloads it on SIGHUP.

use super::{
    saslprep, DecoyShape, ProhibitedCharacter, ScramCredentialSource, ScramCredentials, METHOD,
};
use crate::auth::{
    content_lines, duplicate_user_warning, read_file, AuthFileError, LoadFile, Reloadable,
};
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use base64::Engine as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why [`ScramFile::entry`] cannot make a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("username must be non-empty, without ':', without surrounding blanks, and unchanged by SASLprep")]
    Username,
    #[error("password: {0}")]
    Password(#[from] ProhibitedCharacter),
}

/// A loaded SCRAM credentials file.
#[derive(Debug, Clone)]
pub struct ScramFile {
    path: PathBuf,
    users: HashMap<String, ScramCredentials>,
    decoy: DecoyShape,
    warnings: Vec<String>,
}

impl ScramFile {
    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<ScramFile, AuthFileError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        ScramFile::parse(path, &bytes)
    }

    /// Parses file content; `path` only names the file in errors and warnings. Blank lines
    /// and lines starting with `#` are skipped; the first entry of a duplicate user wins.
    pub fn parse(path: &Path, content: &[u8]) -> Result<ScramFile, AuthFileError> {
        let mut users = HashMap::new();
        let mut warnings = Vec::new();
        for entry in content_lines(path, content) {
            let (line, text) = entry?;
            let syntax = |message: String| AuthFileError::Syntax {
                path: path.to_owned(),
                line,
                message,
            };
            let (username, credentials) = parse_line(text).map_err(syntax)?;
            if users.contains_key(username) {
                warnings.push(duplicate_user_warning(path, line, username));
                continue;
            }
            users.insert(username.to_owned(), credentials);
        }
        let decoy = typical_shape(users.values());
        Ok(ScramFile {
            path: path.to_owned(),
            users,
            decoy,
            warnings,
        })
    }

    /// The line for `username` (SASLprepped by the caller, without `:`) with `credentials`.
    pub fn line(username: &str, credentials: &ScramCredentials) -> String {
        format!("{username}:{credentials}")
    }

    /// A new line for `username` with `password`: checks the username can be stored and
    /// read back, SASLpreps the password, draws a salt and derives the keys (slow: PBKDF2).
    pub fn entry(username: &str, password: &str, iterations: u32) -> Result<String, EntryError> {
        let storable = !username.is_empty()
            && !username.contains(':')
            && username.trim() == username
            && saslprep(username).is_ok_and(|p| p == username);
        if !storable {
            return Err(EntryError::Username);
        }
        let credentials = ScramCredentials::generate(password, iterations)?;
        Ok(Self::line(username, &credentials))
    }

    /// Things worth a log line that did not stop the load (duplicate users).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl ScramCredentialSource for ScramFile {
    fn lookup(&self, username: &str) -> Option<ScramCredentials> {
        self.users.get(username).cloned()
    }

    fn decoy_shape(&self) -> DecoyShape {
        self.decoy
    }
}

impl ScramCredentialSource for Reloadable<ScramFile> {
    fn lookup(&self, username: &str) -> Option<ScramCredentials> {
        self.current().lookup(username)
    }

    fn decoy_shape(&self) -> DecoyShape {
        self.current().decoy_shape()
    }
}

impl LoadFile for ScramFile {
    fn load_file(path: &Path) -> Result<Self, AuthFileError> {
        ScramFile::load(path)
    }
}

fn parse_line(text: &str) -> Result<(&str, ScramCredentials), String> {
    let (username, secret) = text
        .split_once(':')
        .ok_or("expected username:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")?;
    let (username, secret) = (username.trim(), secret.trim());
    match saslprep(username) {
        Ok(prepared) if prepared == username && !username.is_empty() => {}
        _ => return Err(format!("username '{username}' is empty or not SASLprepped")),
    }
    let credentials = parse_secret(secret).map_err(|e| format!("user '{username}': {e}"))?;
    Ok((username, credentials))
}

fn parse_secret(secret: &str) -> Result<ScramCredentials, &'static str> {
    let rest = secret
        .strip_prefix(METHOD)
        .and_then(|r| r.strip_prefix('$'))
        .ok_or("not a SCRAM-SHA-256$ entry")?;
    let (params, keys) = rest.split_once('$').ok_or("expected $ before the keys")?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or("expected <iterations>:<salt>")?;
    let (stored_key, server_key) = keys
        .split_once(':')
        .ok_or("expected <StoredKey>:<ServerKey>")?;
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| "iteration count is not a number")?;
    if iterations == 0 {
        return Err("iteration count must be at least 1");
    }
    let salt = STANDARD_PAD_INDIFFERENT
        .decode(salt)
        .map_err(|_| "salt is not base64")?;
    if salt.is_empty() {
        return Err("empty salt");
    }
    Ok(ScramCredentials {
        salt,
        iterations,
        stored_key: decode_key(stored_key).ok_or("StoredKey is not 32 bytes of base64")?,
        server_key: decode_key(server_key).ok_or("ServerKey is not 32 bytes of base64")?,
    })
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD_PAD_INDIFFERENT.decode(b64).ok()?.try_into().ok()
}

/// The most common iteration count and salt length among the entries (ties: the larger),
/// so that decoys for unknown users look like the real ones.
fn typical_shape<'a>(entries: impl Iterator<Item = &'a ScramCredentials>) -> DecoyShape {
    let mut iterations: HashMap<u32, usize> = HashMap::new();
    let mut salt_lens: HashMap<usize, usize> = HashMap::new();
    for c in entries {
        *iterations.entry(c.iterations).or_default() += 1;
        *salt_lens.entry(c.salt.len()).or_default() += 1;
    }
    let default = DecoyShape::default();
    DecoyShape {
        iterations: most_common(iterations).unwrap_or(default.iterations),
        salt_len: most_common(salt_lens).unwrap_or(default.salt_len),
    }
}

fn most_common<T: Ord + Copy>(counts: HashMap<T, usize>) -> Option<T> {
    counts
        .into_iter()
        .max_by_key(|&(value, count)| (count, value))
        .map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PENCIL: &str = "user:SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn parse(content: &str) -> Result<ScramFile, AuthFileError> {
        ScramFile::parse(Path::new("scram"), content.as_bytes())
    }

    #[test]
    fn reads_postgresql_style_entries() {
        let file = parse(&format!("# users\n\n{PENCIL}\n")).unwrap();
        assert_eq!(file.len(), 1);
        let c = file.lookup("user").unwrap();
        assert_eq!(c, ScramCredentials::derive(b"pencil", &c.salt, 4096));
        assert!(file.lookup("nobody").is_none());
    }

    #[test]
    fn generated_line_reads_back() {
        let c = ScramCredentials::generate("s3cret", 5000).unwrap();
        let file = parse(&ScramFile::line("alice", &c)).unwrap();
        assert_eq!(file.lookup("alice"), Some(c));
        assert_eq!(
            file.decoy_shape(),
            DecoyShape {
                iterations: 5000,
                salt_len: 16
            }
        );
    }

    #[test]
    fn entry_refuses_usernames_that_would_not_read_back() {
        for bad in ["", "a:b", " a", "a\u{7}", "a\u{00A0}b"] {
            assert_eq!(
                ScramFile::entry(bad, "pw", 4096),
                Err(EntryError::Username),
                "{bad:?}"
            );
        }
        let line = ScramFile::entry("José", "pw", 4096).unwrap();
        assert!(parse(&line).unwrap().lookup("José").is_some());
        assert!(matches!(
            ScramFile::entry("a", "p\u{0}w", 4096),
            Err(EntryError::Password(_))
        ));
    }

    #[test]
    fn errors_name_the_line() {
        for bad in [
            "user",
            "user:$7$101$abc$def",
            "user:SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
            "user:SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
            "user:SCRAM-SHA-256$x:W22Z$AAAA:AAAA",
            "us\u{7}er:SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        ] {
            let err = parse(&format!("# c\n{bad}\n")).unwrap_err();
            assert!(err.to_string().starts_with("scram:2:"), "{bad}: {err}");
        }
    }

    #[test]
    fn duplicate_users_keep_the_first_entry_with_a_warning() {
        let other = ScramFile::line("user", &ScramCredentials::generate("x", 4096).unwrap());
        let file = parse(&format!("{PENCIL}\n{other}\n")).unwrap();
        assert_eq!(file.warnings().len(), 1);
        let c = file.lookup("user").unwrap();
        assert_eq!(c, ScramCredentials::derive(b"pencil", &c.salt, 4096));
    }
}
