//! Mosquitto's `password_file`: one `username:hash` line per user, checked at CONNECT.
//!
//! Three hash formats are read, so a file written by `mosquitto_passwd` works unchanged:
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 64-byte output, what
//!   `mosquitto_passwd` 2.x writes by default (salt and hash in standard base64 with padding).
//! - `$6$<salt>$<hash>`: one SHA-512 over the password followed by the raw salt bytes. This is
//!   Mosquitto's own format (`-H sha512`, the 1.x default), *not* crypt(3)'s `$6$`.
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string, what `midge passwd` writes by
//!   default. Mosquitto cannot read these; write `$7$` (`midge passwd -H sha512-pbkdf2`) for a
//!   file both brokers share.
//!
//! Verifying costs real CPU (argon2id with the default parameters takes tens of milliseconds),
//! so callers on an async runtime should verify inside `spawn_blocking`.

use super::{
    content_lines, duplicate_user_warning, read_file, AuthFileError, AuthResult, Authenticator,
};
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use base64::Engine as _;
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// `mosquitto_passwd` 2.x's default PBKDF2 iteration count (`PW_DEFAULT_ITERATIONS`). Low,
/// because Mosquitto verifies on its single network thread; argon2id is Midge's default.
pub const MOSQUITTO_DEFAULT_ITERATIONS: u32 = 101;

/// Salt length `mosquitto_passwd` writes for `$6$` and `$7$` (`SALT_LEN`).
pub const MOSQUITTO_SALT_LEN: usize = 12;

const SHA512_LEN: usize = 64;

/// The hash algorithm of a password entry; also the `-H` choice of `midge passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$...` (PHC string): Midge's default for new entries.
    Argon2id,
    /// `$7$...`: PBKDF2-HMAC-SHA512, `mosquitto_passwd -H sha512-pbkdf2` (its default).
    Sha512Pbkdf2,
    /// `$6$...`: salted SHA-512, `mosquitto_passwd -H sha512` (Mosquitto 1.x's default).
    Sha512,
}

impl HashKind {
    /// Parses the name `mosquitto_passwd -H` accepts (`sha512`, `sha512-pbkdf2`) or `argon2id`.
    pub fn from_name(name: &str) -> Option<HashKind> {
        match name {
            "argon2id" => Some(HashKind::Argon2id),
            "sha512-pbkdf2" => Some(HashKind::Sha512Pbkdf2),
            "sha512" => Some(HashKind::Sha512),
            _ => None,
        }
    }
}

/// One stored password hash, parsed and checked for shape when the file is loaded.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$iterations$salt$hash`.
    Sha512Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; SHA512_LEN],
    },
    /// `$6$salt$hash`.
    Sha512 {
        salt: Vec<u8>,
        hash: [u8; SHA512_LEN],
    },
    /// A validated `$argon2id$` PHC string; its parameters travel with it.
    Argon2id(String),
}

/// Why a hash string could not be read. Shown with the file name and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown hash type (expected $7$, $6$ or $argon2id$; a plain-text password file must be converted with `midge passwd -U`)")]
    UnknownType,
    #[error("malformed {0} hash: {1}")]
    Malformed(&'static str, &'static str),
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

impl PasswordHash {
    /// Parses the part after `username:`.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        if let Some(rest) = s.strip_prefix("$7$") {
            parse_pbkdf2(rest)
        } else if let Some(rest) = s.strip_prefix("$6$") {
            parse_sha512(rest)
        } else if s.starts_with("$argon2id$") {
            parse_argon2id(s)
        } else {
            Err(HashError::UnknownType)
        }
    }

    /// Hashes `password` with a fresh random salt, as `midge passwd` does. `iterations` applies
    /// to [`HashKind::Sha512Pbkdf2`] only.
    pub fn generate(
        kind: HashKind,
        password: &[u8],
        iterations: u32,
    ) -> Result<PasswordHash, HashError> {
        match kind {
            HashKind::Sha512Pbkdf2 => {
                if iterations == 0 {
                    return Err(HashError::Hashing("iterations must be > 0".into()));
                }
                let salt = random_bytes::<MOSQUITTO_SALT_LEN>().to_vec();
                let hash = pbkdf2_sha512(password, &salt, iterations);
                Ok(PasswordHash::Sha512Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            HashKind::Sha512 => {
                let salt = random_bytes::<MOSQUITTO_SALT_LEN>().to_vec();
                let hash = salted_sha512(password, &salt);
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            HashKind::Argon2id => argon2id_hash(password),
        }
    }

    /// The algorithm of this entry.
    pub fn kind(&self) -> HashKind {
        match self {
            PasswordHash::Sha512Pbkdf2 { .. } => HashKind::Sha512Pbkdf2,
            PasswordHash::Sha512 { .. } => HashKind::Sha512,
            PasswordHash::Argon2id(_) => HashKind::Argon2id,
        }
    }

    /// Whether `password` is the one this hash was made from. Compares in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let computed = pbkdf2_sha512(password, salt, *iterations);
                bool::from(computed.ct_eq(hash))
            }
            PasswordHash::Sha512 { salt, hash } => {
                let computed = salted_sha512(password, salt);
                bool::from(computed.ct_eq(hash))
            }
            PasswordHash::Argon2id(phc) => argon2id_verify(phc, password),
        }
    }
}

/// The form written to the file, byte for byte what `mosquitto_passwd` writes for `$6$`/`$7$`.
impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            PasswordHash::Argon2id(phc) => f.write_str(phc),
        }
    }
}

/// Never prints hash material (it would end up in logs).
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({:?})", self.kind())
    }
}

fn parse_pbkdf2(rest: &str) -> Result<PasswordHash, HashError> {
    const WHAT: &str = "$7$";
    let mut parts = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HashError::Malformed(
            WHAT,
            "expected $7$iterations$salt$hash",
        ));
    };
    let iterations =
        iterations
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(HashError::Malformed(
                WHAT,
                "iterations must be a number > 0",
            ))?;
    let salt = decode_salt(WHAT, salt)?;
    let hash = decode_sha512(WHAT, hash)?;
    Ok(PasswordHash::Sha512Pbkdf2 {
        iterations,
        salt,
        hash,
    })
}

fn parse_sha512(rest: &str) -> Result<PasswordHash, HashError> {
    const WHAT: &str = "$6$";
    let mut parts = rest.split('$');
    let (Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HashError::Malformed(WHAT, "expected $6$salt$hash"));
    };
    let salt = decode_salt(WHAT, salt)?;
    let hash = decode_sha512(WHAT, hash)?;
    Ok(PasswordHash::Sha512 { salt, hash })
}

fn parse_argon2id(s: &str) -> Result<PasswordHash, HashError> {
    use argon2::password_hash::PasswordHash as Phc;
    let phc = Phc::new(s).map_err(|_| HashError::Malformed("$argon2id$", "not a PHC string"))?;
    // Building the hasher from the string checks version and parameters now, so a bad entry
    // fails at load time rather than at every CONNECT.
    argon2::Params::try_from(&phc)
        .map_err(|_| HashError::Malformed("$argon2id$", "bad parameters"))?;
    if phc.hash.is_none() || phc.salt.is_none() {
        return Err(HashError::Malformed("$argon2id$", "missing salt or hash"));
    }
    Ok(PasswordHash::Argon2id(s.to_owned()))
}

/// Mosquitto decodes with OpenSSL's BIO base64, which does not insist on padding.
fn decode_salt(what: &'static str, b64: &str) -> Result<Vec<u8>, HashError> {
    match STANDARD_PAD_INDIFFERENT.decode(b64) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        _ => Err(HashError::Malformed(what, "salt is not base64")),
    }
}

fn decode_sha512(what: &'static str, b64: &str) -> Result<[u8; SHA512_LEN], HashError> {
    let bytes = STANDARD_PAD_INDIFFERENT
        .decode(b64)
        .map_err(|_| HashError::Malformed(what, "hash is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| HashError::Malformed(what, "hash is not 64 bytes (SHA-512)"))
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; SHA512_LEN] {
    let mut out = [0u8; SHA512_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

/// Mosquitto's `$6$`: SHA-512(password || salt), no rounds (`pw__digest` in Mosquitto).
fn salted_sha512(password: &[u8], salt: &[u8]) -> [u8; SHA512_LEN] {
    let mut digest = Sha512::new();
    digest.update(password);
    digest.update(salt);
    digest.finalize().into()
}

fn argon2id_hash(password: &[u8]) -> Result<PasswordHash, HashError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    // 16 random bytes, the length the PHC format recommends.
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| HashError::Hashing(e.to_string()))?;
    // argon2id v19 with the crate's defaults (m=19 MiB, t=2, p=1: OWASP's recommendation).
    let phc = argon2::Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| HashError::Hashing(e.to_string()))?;
    Ok(PasswordHash::Argon2id(phc.to_string()))
}

fn argon2id_verify(phc: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash as Phc, PasswordVerifier};
    // The string was validated at load; a failure here means "no match", never "allow".
    match Phc::new(phc) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore as _;
    let mut bytes = [0u8; N];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A loaded password file: usernames and their hashes.
#[derive(Debug, Clone)]
pub struct PasswordFile {
    path: PathBuf,
    users: HashMap<String, PasswordHash>,
    /// A hash checked for unknown users, so that a login with an unknown name costs as much
    /// as one with a wrong password and response times do not tell which names exist.
    decoy: Option<PasswordHash>,
    warnings: Vec<String>,
}

impl PasswordFile {
    /// Reads and parses `path`. Pure: the same file gives the same result, so a reload can
    /// simply call this again and keep the old value on error.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, AuthFileError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        PasswordFile::parse(path, &bytes)
    }

    /// Parses file content; `path` only names the file in errors and warnings.
    pub fn parse(path: &Path, content: &[u8]) -> Result<PasswordFile, AuthFileError> {
        let mut file = PasswordFile {
            path: path.to_owned(),
            users: HashMap::new(),
            decoy: None,
            warnings: Vec::new(),
        };
        for entry in content_lines(path, content) {
            let (line, text) = entry?;
            let syntax = |message: String| AuthFileError::Syntax {
                path: path.to_owned(),
                line,
                message,
            };
            let (username, hash) = parse_line(text).map_err(syntax)?;
            if file.users.contains_key(username) {
                // Later Mosquitto 2.0 releases keep the first entry and log the duplicate
                // (2.0.11 used the last); the warning makes the choice visible.
                file.warnings
                    .push(duplicate_user_warning(path, line, username));
                continue;
            }
            if file.decoy.is_none() {
                file.decoy = Some(hash.clone());
            }
            file.users.insert(username.to_owned(), hash);
        }
        Ok(file)
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Things worth a log line that did not stop the load (duplicate users).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users (then no username/password login can succeed).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `username` has an entry.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The stored hash for `username`.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// Whether `username` exists and `password` matches its hash.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        self.users
            .get(username)
            .is_some_and(|hash| hash.verify(password))
    }
}

/// Splits `username:hash`. Mosquitto trims blanks around both fields.
fn parse_line(text: &str) -> Result<(&str, PasswordHash), String> {
    let Some((username, hash)) = text.split_once(':') else {
        return Err("expected username:hash".into());
    };
    let (username, hash) = (username.trim(), hash.trim());
    if username.is_empty() {
        return Err("empty username".into());
    }
    if hash.is_empty() {
        return Err(format!("no password hash for user '{username}'"));
    }
    let hash = PasswordHash::parse(hash).map_err(|e| format!("user '{username}': {e}"))?;
    Ok((username, hash))
}

/// Mosquitto's `password_file` check (`mosquitto_basic_auth_default`): a client without a
/// username is left to `allow_anonymous`; an unknown user, a missing password or a wrong one
/// are bad credentials.
impl Authenticator for PasswordFile {
    fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        _client_id: &str,
    ) -> AuthResult {
        let Some(username) = username else {
            return AuthResult::Anonymous;
        };
        let Some(password) = password else {
            return AuthResult::BadCredentials;
        };
        match self.users.get(username) {
            Some(hash) if hash.verify(password) => AuthResult::Allowed,
            Some(_) => AuthResult::BadCredentials,
            None => {
                if let Some(decoy) = &self.decoy {
                    std::hint::black_box(decoy.verify(password));
                }
                AuthResult::BadCredentials
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python: `hashlib.sha512(b"password" + salt)` where
    /// salt = base64 `clQ4Ocu312S0qWgl`; it is the `roger` entry of Mosquitto's own
    /// `pwfile.example`, whose password is "password".
    const MOSQUITTO_EXAMPLE_SHA512: &str = "$6$clQ4Ocu312S0qWgl$Cv2wUxgEN73c6C6jlBkswqR4AkHsvDLWvtEXZZ8NpsBLgP1WAo/qA+WXcmEN/mjDNgdUwcxRAveqNMs2xUVQYA==";

    #[test]
    fn sha512_entry_from_mosquitto_example_verifies() {
        let hash = PasswordHash::parse(MOSQUITTO_EXAMPLE_SHA512).unwrap();
        assert_eq!(hash.kind(), HashKind::Sha512);
        assert!(hash.verify(b"password"));
        assert!(!hash.verify(b"Password"));
        assert!(!hash.verify(b""));
    }

    #[test]
    fn display_writes_back_what_was_parsed() {
        let hash = PasswordHash::parse(MOSQUITTO_EXAMPLE_SHA512).unwrap();
        assert_eq!(hash.to_string(), MOSQUITTO_EXAMPLE_SHA512);
    }

    #[test]
    fn generated_entries_of_every_kind_verify() {
        for kind in [HashKind::Sha512Pbkdf2, HashKind::Sha512, HashKind::Argon2id] {
            let hash = PasswordHash::generate(kind, b"s3cret", 101).unwrap();
            assert_eq!(hash.kind(), kind);
            let reparsed = PasswordHash::parse(&hash.to_string()).unwrap();
            assert!(reparsed.verify(b"s3cret"), "{kind:?}");
            assert!(!reparsed.verify(b"s3cret "), "{kind:?}");
        }
    }

    #[test]
    fn pbkdf2_output_has_mosquitto_passwd_shape() {
        let hash = PasswordHash::generate(HashKind::Sha512Pbkdf2, b"x", 101).unwrap();
        let text = hash.to_string();
        let parts: Vec<&str> = text.split('$').collect();
        // "", "7", iterations, 16 chars of salt (12 bytes), 88 chars of hash (64 bytes)
        assert_eq!(parts.len(), 5, "{text}");
        assert_eq!((parts[1], parts[2]), ("7", "101"));
        assert_eq!(parts[3].len(), 16);
        assert_eq!(parts[4].len(), 88);
        assert!(parts[4].ends_with("=="));
    }

    #[test]
    fn malformed_hashes_are_rejected() {
        for bad in [
            "plaintext",
            "$7$",
            "$7$0$AAAA$AAAA",
            "$7$abc$AAAA$AAAA",
            "$7$101$!!!$AAAA",
            "$7$101$AAAAAAAAAAAAAAAA$AAAA",
            "$6$AAAAAAAAAAAAAAAA",
            "$6$AAAAAAAAAAAAAAAA$AAAA$extra",
            "$argon2id$nonsense",
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            "$1$abc$def",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_skips_comments_and_blank_lines_and_trims() {
        let content = format!("# users\n\n  roger : {MOSQUITTO_EXAMPLE_SHA512}  \r\n#other:x\n");
        let file = PasswordFile::parse(Path::new("pw"), content.as_bytes()).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("roger", b"password"));
        assert!(!file.verify("roger", b"wrong"));
        assert!(!file.verify("nobody", b"password"));
    }

    #[test]
    fn malformed_line_error_names_file_and_line() {
        let content = format!("roger:{MOSQUITTO_EXAMPLE_SHA512}\n# ok\njust-a-name\n");
        let err = PasswordFile::parse(Path::new("/etc/midge/pw"), content.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/midge/pw:3: "), "{text}");
    }

    #[test]
    fn plain_text_password_line_is_an_error_that_mentions_upgrade() {
        let err = PasswordFile::parse(Path::new("pw"), b"alice:secret\n").unwrap_err();
        assert!(err.to_string().contains("pw:1:"), "{err}");
        assert!(err.to_string().contains("-U"), "{err}");
    }

    #[test]
    fn duplicate_user_keeps_first_entry_and_warns() {
        let other = PasswordHash::generate(HashKind::Sha512, b"other", 0).unwrap();
        let content = format!("roger:{MOSQUITTO_EXAMPLE_SHA512}\nroger:{other}\n");
        let file = PasswordFile::parse(Path::new("pw"), content.as_bytes()).unwrap();
        assert!(file.verify("roger", b"password"));
        assert!(!file.verify("roger", b"other"));
        assert_eq!(file.warnings().len(), 1);
        assert!(file.warnings()[0].contains("pw:2"));
    }

    #[test]
    fn authenticator_maps_mosquitto_outcomes() {
        let content = format!("roger:{MOSQUITTO_EXAMPLE_SHA512}\n");
        let file = PasswordFile::parse(Path::new("pw"), content.as_bytes()).unwrap();
        let auth = |u: Option<&str>, p: Option<&[u8]>| file.authenticate(u, p, "client");
        assert_eq!(auth(Some("roger"), Some(b"password")), AuthResult::Allowed);
        assert_eq!(
            auth(Some("roger"), Some(b"nope")),
            AuthResult::BadCredentials
        );
        assert_eq!(auth(Some("roger"), None), AuthResult::BadCredentials);
        assert_eq!(
            auth(Some("eve"), Some(b"password")),
            AuthResult::BadCredentials
        );
        assert_eq!(auth(None, None), AuthResult::Anonymous);
    }

    #[test]
    fn debug_does_not_leak_hash_material() {
        let hash = PasswordHash::parse(MOSQUITTO_EXAMPLE_SHA512).unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash(Sha512)");
    }
}
