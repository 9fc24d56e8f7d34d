//! SCRAM-SHA-256 (RFC 5802, RFC 7677) server side, for MQTT 5 enhanced authentication:
//! a pure state machine from client messages to server messages, with no I/O and no clock.
//!
//! The MQTT mapping (MQTT 5.0 section 4.12), for Authentication Method [`METHOD`]:
//!
//! | client sends                               | server calls              | server answers                        |
//! | ------------------------------------------ | ------------------------- | ------------------------------------- |
//! | CONNECT, Authentication Data = client-first | [`ScramServer::start`]   | AUTH 0x18 with server-first           |
//! | AUTH 0x18 with client-final                 | [`ScramServer::finish`]  | CONNACK 0x00 with server-final        |
//! | (any failure)                               |                          | CONNACK 0x87, no session              |
//!
//! Re-authentication (AUTH 0x19 carrying a new client-first) uses
//! [`ScramServer::start_reauthentication`], then [`ScramServer::finish`], and ends with
//! AUTH 0x00 carrying server-final (or DISCONNECT 0x87).
//!
//! Channel binding is not offered (this is SCRAM-SHA-256, not SCRAM-SHA-256-PLUS): a client
//! that asks for it (`p=`) is refused; one that could but thinks we cannot (`y`) is accepted,
//! which RFC 5802 section 6 allows because the server does not advertise a -PLUS variant.
//!
//! Unknown users get the same exchange as known ones: a server-first with a salt derived from
//! the username and a per-process secret (stable across attempts, so it cannot be told apart
//! from a real one), and a failure at the proof step that is the one a wrong password gets.
//!
//! The keys come from a [`ScramCredentialSource`], usually a [`ScramFile`]: a Mosquitto
//! `password_file` stores one-way hashes from which SCRAM keys cannot be computed.

mod file;
mod saslprep;

pub use file::{EntryError, ScramFile};
pub use saslprep::{saslprep, ProhibitedCharacter};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use midge_proto::ReasonCode;
use pbkdf2::hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use subtle::{Choice, ConstantTimeEq};

/// The MQTT Authentication Method name.
pub const METHOD: &str = "SCRAM-SHA-256";

/// RFC 7677's minimum and PostgreSQL's default PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of generated credentials and of unknown users' decoy salts (PostgreSQL's too).
pub const SALT_LEN: usize = 16;

/// Random bytes in a server nonce (24 base64 characters).
pub const NONCE_LEN: usize = 18;

/// Longest client message accepted. Real ones are well under 200 bytes; the bound keeps what
/// a pending exchange holds per connection small.
pub const MAX_MESSAGE_LEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// What the server stores for one user: enough to verify a proof and to prove itself, not
/// enough to log in as the user (RFC 5802 section 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramCredentials {
    /// Computes the keys for `password` (already SASLprepped; see [`ScramCredentials::generate`]).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// SASLprep `password`, draw a random [`SALT_LEN`]-byte salt and derive the keys: what
    /// adding a user to a [`ScramFile`] needs.
    pub fn generate(password: &str, iterations: u32) -> Result<Self, ProhibitedCharacter> {
        use rand::RngCore as _;
        let password = saslprep(password)?;
        let mut salt = [0u8; SALT_LEN];
        // ThreadRng is a CSPRNG seeded from the operating system.
        rand::rng().fill_bytes(&mut salt);
        Ok(Self::derive(password.as_bytes(), &salt, iterations.max(1)))
    }
}

/// The stored form after `username:` in a [`ScramFile`] (RFC 5803, as PostgreSQL writes it):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 with padding.
impl fmt::Display for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{METHOD}${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Keys stay out of logs.
impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The shape of unknown users' decoy credentials. It should match the real entries, or a
/// salt length or iteration count different from everyone else's gives unknown names away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoyShape {
    pub iterations: u32,
    pub salt_len: usize,
}

impl Default for DecoyShape {
    fn default() -> Self {
        DecoyShape {
            iterations: DEFAULT_ITERATIONS,
            salt_len: SALT_LEN,
        }
    }
}

/// Where SCRAM credentials come from. Called once per exchange, on the connection's task:
/// implementations should be a map lookup, not I/O.
pub trait ScramCredentialSource: Send + Sync {
    /// The credentials of `username` (already SASLprepped), if it exists.
    fn lookup(&self, username: &str) -> Option<ScramCredentials>;

    /// What unknown users' decoy credentials look like.
    fn decoy_shape(&self) -> DecoyShape {
        DecoyShape::default()
    }
}

impl ScramCredentialSource for HashMap<String, ScramCredentials> {
    fn lookup(&self, username: &str) -> Option<ScramCredentials> {
        self.get(username).cloned()
    }
}

/// Why an exchange failed. Every variant means "not authenticated": the broker answers
/// [`ScramError::reason_code`] and may put [`ScramError::server_error`] in a Reason String.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow RFC 5802's grammar (or is not UTF-8, or is too long).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=`), which this mechanism does not offer.
    #[error("client requires channel binding")]
    ChannelBindingNotSupported,
    /// The client-final's `c=` is not the gs2 header of the client-first.
    #[error("channel binding data does not match the client-first message")]
    ChannelBindingMismatch,
    /// A mandatory extension (`m=`) was sent.
    #[error("mandatory SCRAM extensions are not supported")]
    ExtensionsNotSupported,
    /// The username is not valid saslname encoding, is empty, or fails SASLprep.
    #[error("invalid SCRAM username")]
    InvalidUsername,
    /// An authorisation identity different from the username was asked for.
    #[error("authorization identity differs from the username")]
    AuthzidNotSupported,
    /// The client-final's nonce is not the one of this exchange.
    #[error("nonce does not match")]
    NonceMismatch,
    /// Wrong password or unknown user (deliberately indistinguishable).
    #[error("invalid proof (wrong password or unknown user)")]
    InvalidProof,
    /// A re-authentication named a different user than the connection's.
    #[error("re-authentication with a different username")]
    UsernameChanged,
}

impl ScramError {
    /// The MQTT 5 reason code for the CONNACK (or the DISCONNECT after a failed
    /// re-authentication): always Not authorized, as for a wrong password-file login.
    pub fn reason_code(self) -> ReasonCode {
        ReasonCode::NOT_AUTHORIZED
    }

    /// The RFC 5802 `server-error-value` (what `e=` would carry).
    pub fn server_error(self) -> &'static str {
        match self {
            ScramError::Malformed(_) => "invalid-encoding",
            ScramError::ChannelBindingNotSupported => "channel-binding-not-supported",
            ScramError::ChannelBindingMismatch => "channel-bindings-dont-match",
            ScramError::ExtensionsNotSupported => "extensions-not-supported",
            ScramError::InvalidUsername => "invalid-username-encoding",
            ScramError::InvalidProof => "invalid-proof",
            ScramError::AuthzidNotSupported
            | ScramError::NonceMismatch
            | ScramError::UsernameChanged => "other-error",
        }
    }

    /// A server-final message reporting the error (`e=...`), for the Authentication Data of
    /// the failing CONNACK/AUTH when the client expects one.
    pub fn server_final(self) -> Vec<u8> {
        format!("e={}", self.server_error()).into_bytes()
    }
}

/// The server's half of the nonce: printable ASCII without `,`, validated once here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNonce(String);

impl ServerNonce {
    /// [`NONCE_LEN`] fresh random bytes from the operating system's CSPRNG.
    pub fn random() -> ServerNonce {
        use rand::RngCore as _;
        let mut bytes = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut bytes);
        ServerNonce::from_bytes(bytes)
    }

    /// The nonce for given random bytes (base64): lets tests inject the randomness.
    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> ServerNonce {
        ServerNonce(STANDARD.encode(bytes))
    }

    /// A nonce given as text (RFC test vectors); `None` unless it is non-empty printable
    /// ASCII without `,`.
    pub fn from_text(text: &str) -> Option<ServerNonce> {
        valid_nonce(text).then(|| ServerNonce(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A successful exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSuccess {
    /// The authenticated username (SASLprepped): the client's identity for ACLs.
    pub username: String,
    /// The server-final message (`v=...`) for the CONNACK's or AUTH's Authentication Data.
    pub server_final: Vec<u8>,
}

/// One exchange between client-first and client-final. Holds no secret beyond the user's
/// stored keys; dropping it abandons the exchange.
pub struct ScramServer {
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credentials: ScramCredentials,
    known_user: bool,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Reads the client-first message and answers the server-first message, to be sent in
    /// AUTH 0x18. An unknown user gets a normal-looking answer; only `finish` fails for them.
    pub fn start(
        source: &dyn ScramCredentialSource,
        client_first: &[u8],
        nonce: ServerNonce,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let first = ClientFirst::parse(client_first)?;
        let (credentials, known_user) = match source.lookup(&first.username) {
            Some(c) => (c, true),
            None => (
                decoy_credentials(&first.username, source.decoy_shape()),
                false,
            ),
        };
        let nonce = format!("{}{}", first.client_nonce, nonce.0);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credentials.salt),
            credentials.iterations
        );
        let reply = server_first.clone().into_bytes();
        let server = ScramServer {
            username: first.username,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first,
            nonce,
            credentials,
            known_user,
        };
        Ok((server, reply))
    }

    /// [`ScramServer::start`] for a re-authentication (AUTH 0x19): the client-first must name
    /// the user the connection is authenticated as.
    pub fn start_reauthentication(
        source: &dyn ScramCredentialSource,
        client_first: &[u8],
        nonce: ServerNonce,
        current_username: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let (server, reply) = Self::start(source, client_first, nonce)?;
        if server.username != current_username {
            return Err(ScramError::UsernameChanged);
        }
        Ok((server, reply))
    }

    /// The (SASLprepped) username the client-first named; not yet authenticated.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the client-final message's proof. On success the server-final message goes in
    /// the CONNACK (or, when re-authenticating, the AUTH 0x00) as Authentication Data.
    pub fn finish(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let fin = ClientFinal::parse(client_final)?;
        let binding = STANDARD
            .decode(fin.channel_binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if fin.nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof: [u8; 32] = STANDARD
            .decode(fin.proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            fin.without_proof.as_bytes(),
        ];
        let client_signature = hmac(&self.credentials.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let matches = stored_key.ct_eq(&self.credentials.stored_key)
            & Choice::from(u8::from(self.known_user));
        if !bool::from(matches) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.credentials.server_key, &auth_message);
        Ok(ScramSuccess {
            username: self.username,
            server_final: format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        })
    }
}

/// The parts of a client-first message the server needs.
struct ClientFirst {
    /// `n,,`, `y,,` or with `a=authzid`: echoed (base64) in the client-final's `c=`.
    gs2_header: String,
    /// The message without the gs2 header: part of the AuthMessage.
    bare: String,
    username: String,
    client_nonce: String,
}

impl ClientFirst {
    fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = as_message(msg)?;
        let (cbind_flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match cbind_flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        let authzid = match authzid {
            "" => None,
            a => Some(
                a.strip_prefix("a=")
                    .ok_or(ScramError::Malformed("bad authorization identity"))?,
            ),
        };
        let gs2_header = &msg[..msg.len() - bare.len()];
        let mut attrs = bare.split(',');
        let user = attrs.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError::ExtensionsNotSupported);
        }
        let username = user
            .strip_prefix("n=")
            .ok_or(ScramError::Malformed("no username"))?;
        let username = prepare_username(username)?;
        if let Some(authzid) = authzid {
            if prepare_username(authzid)? != username {
                return Err(ScramError::AuthzidNotSupported);
            }
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed("bad nonce"));
        }
        check_extensions(attrs)?;
        Ok(ClientFirst {
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
            username,
            client_nonce: client_nonce.to_owned(),
        })
    }
}

/// The parts of a client-final message, borrowed from it.
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    proof: &'a str,
    /// Everything before `,p=`: part of the AuthMessage.
    without_proof: &'a str,
}

impl<'a> ClientFinal<'a> {
    fn parse(msg: &'a [u8]) -> Result<ClientFinal<'a>, ScramError> {
        let msg = as_message(msg)?;
        // The proof is always the last attribute.
        let (without_proof, proof) = msg
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("no proof"))?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let channel_binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        check_extensions(attrs)?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            proof,
            without_proof,
        })
    }
}

fn as_message(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// Optional extensions (`x=value`, one ASCII letter) are ignored, as RFC 5802 section 5.1
/// asks; anything else after the known attributes is malformed.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for attr in attrs {
        let b = attr.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(ScramError::Malformed("bad attribute"));
        }
    }
    Ok(())
}

/// RFC 5802 `printable`: 0x21-0x7E except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b',')
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`) and SASLpreps it.
fn prepare_username(saslname: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).ok_or(ScramError::InvalidUsername)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(ScramError::InvalidUsername),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    let prepared = saslprep(&out).map_err(|_| ScramError::InvalidUsername)?;
    if prepared.is_empty() {
        return Err(ScramError::InvalidUsername);
    }
    Ok(prepared.into_owned())
}

/// Credentials for a user who does not exist: derived from the username and a per-process
/// secret, so repeated attempts see the same salt, and nobody can compute a matching proof.
fn decoy_credentials(username: &str, shape: DecoyShape) -> ScramCredentials {
    let secret = process_secret();
    let salt_len = shape.salt_len.clamp(1, 1024);
    let mut salt = Vec::with_capacity(salt_len);
    let mut block = 0u32;
    while salt.len() < salt_len {
        let part = hmac(
            secret,
            &[b"salt", &block.to_be_bytes(), username.as_bytes()],
        );
        let take = part.len().min(salt_len - salt.len());
        salt.extend_from_slice(&part[..take]);
        block += 1;
    }
    ScramCredentials {
        salt,
        iterations: shape.iterations.max(1),
        stored_key: hmac(secret, &[b"stored key", username.as_bytes()]),
        server_key: hmac(secret, &[b"server key", username.as_bytes()]),
    }
}

fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        use rand::RngCore as _;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        secret
    })
}

/// HMAC-SHA-256 of the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> HashMap<String, ScramCredentials> {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        HashMap::from([(
            "user".to_owned(),
            ScramCredentials::derive(b"pencil", &salt, 4096),
        )])
    }

    #[test]
    fn gs2_header_variants() {
        let first = ClientFirst::parse(b"y,,n=user,r=abc").unwrap();
        assert_eq!(first.gs2_header, "y,,");
        assert_eq!(first.bare, "n=user,r=abc");
        let first = ClientFirst::parse(b"n,a=user,n=user,r=abc").unwrap();
        assert_eq!(first.gs2_header, "n,a=user,");
        assert!(matches!(
            ClientFirst::parse(b"n,a=other,n=user,r=abc"),
            Err(ScramError::AuthzidNotSupported)
        ));
        assert!(matches!(
            ClientFirst::parse(b"p=tls-unique,,n=user,r=abc"),
            Err(ScramError::ChannelBindingNotSupported)
        ));
        assert!(matches!(
            ClientFirst::parse(b"n,,m=x,n=user,r=abc"),
            Err(ScramError::ExtensionsNotSupported)
        ));
    }

    #[test]
    fn saslname_escapes_are_decoded_and_bad_ones_refused() {
        assert_eq!(prepare_username("a=2Cb=3Dc").unwrap(), "a,b=c");
        for bad in ["a=", "a=2", "a=2D", "=", "", "a\u{7}"] {
            assert_eq!(
                prepare_username(bad),
                Err(ScramError::InvalidUsername),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_extensions_are_ignored_and_garbage_is_not() {
        assert!(ClientFirst::parse(b"n,,n=user,r=abc,x=1").is_ok());
        assert!(matches!(
            ClientFirst::parse(b"n,,n=user,r=abc,junk"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn decoy_salt_is_stable_per_name_and_differs_between_names() {
        let a1 = decoy_credentials("ghost", DecoyShape::default());
        let a2 = decoy_credentials("ghost", DecoyShape::default());
        let b = decoy_credentials("phantom", DecoyShape::default());
        assert_eq!(a1, a2);
        assert_ne!(a1.salt, b.salt);
        assert_eq!(a1.salt.len(), SALT_LEN);
        let long = DecoyShape {
            iterations: 10_000,
            salt_len: 40,
        };
        let c = decoy_credentials("ghost", long);
        assert_eq!((c.salt.len(), c.iterations), (40, 10_000));
    }

    #[test]
    fn the_y_flag_must_be_echoed_in_channel_binding() {
        let (server, _) = ScramServer::start(
            &source(),
            b"y,,n=user,r=abc",
            ServerNonce::from_text("xyz").unwrap(),
        )
        .unwrap();
        // c=biws is "n,,": the client changed its mind about the header.
        assert_eq!(
            server.finish(b"c=biws,r=abcxyz,p=AAAA").unwrap_err(),
            ScramError::ChannelBindingMismatch
        );
    }

    #[test]
    fn server_nonce_text_is_validated() {
        assert!(ServerNonce::from_text("").is_none());
        assert!(ServerNonce::from_text("a,b").is_none());
        assert!(ServerNonce::from_text("a b").is_none());
        assert_eq!(ServerNonce::from_bytes([0; NONCE_LEN]).as_str().len(), 24);
    }

    #[test]
    fn credentials_print_in_postgresql_form_and_hide_keys_in_debug() {
        let c = source().remove("user").unwrap();
        assert_eq!(
            c.to_string(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(!format!("{c:?}").contains("WG5d"));
    }
}
