//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), the client's side, as an
//! [`Authenticator`] for MQTT 5.0 enhanced authentication.
//!
//! The password never crosses the wire: the client proves it knows it (`p=`), and the
//! server proves it holds the matching keys (`v=`), which [`Authenticator::finish`]
//! checks before the connection is trusted.

use crate::auth::{AuthError, Authenticator};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use pbkdf2::hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The Authentication Method name of SCRAM-SHA-256.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The fewest PBKDF2 iterations accepted from a server (RFC 7677 section 4): fewer would
/// let a server, or someone in between, weaken the work factor protecting the password.
pub const MIN_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations accepted from a server by default, so that a hostile server
/// cannot keep the client computing for minutes (see [`ScramSha256::max_iterations`]).
pub const DEFAULT_MAX_ITERATIONS: u32 = 1_000_000;

/// Random bytes in the client nonce (sent base64-encoded, 32 characters).
const NONCE_BYTES: usize = 24;

/// No channel binding, and no authorisation identity: `n,,`.
const GS2_HEADER: &str = "n,,";
/// `c=` of the client-final: the gs2 header in base64.
const CHANNEL_BINDING: &str = "biws";

/// SCRAM-SHA-256 credentials, to pass to
/// [`ConnectOptions::authenticator`](crate::ConnectOptions::authenticator).
///
/// ```
/// use midge_client::{ConnectOptions, ScramSha256};
///
/// let options = ConnectOptions::new("localhost", 1883)
///     .client_id("sensor-17")
///     .authenticator(ScramSha256::new("alice", "correct horse battery staple"));
/// # let _ = options;
/// ```
///
/// Each exchange draws a new 24-byte client nonce from the thread-local CSPRNG (seeded by
/// the operating system), refuses a server asking for fewer than [`MIN_ITERATIONS`] or
/// more than [`max_iterations`](Self::max_iterations) PBKDF2 iterations, refuses
/// mandatory extensions (`m=`) and checks the server's signature in constant time. The
/// salted password is kept for the salt and iteration count it was computed with, so a
/// re-authentication usually costs a few HMACs rather than another PBKDF2.
///
/// **SASLprep** (RFC 4013) is applied in part, as the Midge broker does: non-ASCII
/// spaces become U+0020 and characters "commonly mapped to nothing" are removed, but
/// there is no NFKC normalisation. Use ASCII or NFKC text for usernames and passwords
/// (what keyboards produce for nearly every script); other text may fail to log in.
#[derive(Clone)]
pub struct ScramSha256 {
    username: String,
    password: String,
    max_iterations: u32,
    state: State,
    /// The salted password for (salt, iterations), reused while the server's are unchanged.
    cache: Option<(Vec<u8>, u32, [u8; 32])>,
}

#[derive(Clone)]
enum State {
    Idle,
    /// client-first sent; waiting for server-first.
    SentFirst {
        client_first_bare: String,
        nonce: String,
    },
    /// client-final sent; waiting for server-final, which must carry this signature.
    SentFinal {
        server_signature: [u8; 32],
    },
}

impl fmt::Debug for ScramSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSha256")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("max_iterations", &self.max_iterations)
            .finish_non_exhaustive()
    }
}

impl ScramSha256 {
    /// Credentials for `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        ScramSha256 {
            username: username.into(),
            password: password.into(),
            max_iterations: DEFAULT_MAX_ITERATIONS,
            state: State::Idle,
            cache: None,
        }
    }

    /// The most PBKDF2 iterations to accept from the server (default
    /// [`DEFAULT_MAX_ITERATIONS`]); a server asking for more is refused. Values below
    /// [`MIN_ITERATIONS`] are raised to it.
    pub fn max_iterations(mut self, max: u32) -> Self {
        self.max_iterations = max.max(MIN_ITERATIONS);
        self
    }

    /// The user name this authenticator logs in as.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Starts an exchange with a given client nonce (printable ASCII without `,`).
    fn start_with_nonce(&mut self, nonce: String) -> Result<Option<Bytes>, AuthError> {
        self.state = State::Idle;
        let client_first_bare = format!("n={},r={nonce}", saslname(&self.username)?);
        let client_first = format!("{GS2_HEADER}{client_first_bare}");
        self.state = State::SentFirst {
            client_first_bare,
            nonce,
        };
        Ok(Some(Bytes::from(client_first)))
    }

    /// The salted password for this salt and iteration count (PBKDF2, or the cache).
    fn salted_password(&mut self, salt: &[u8], iterations: u32) -> [u8; 32] {
        if let Some((cached_salt, cached_iterations, salted)) = &self.cache {
            if cached_salt == salt && *cached_iterations == iterations {
                return *salted;
            }
        }
        let password = saslprep_mappings(&self.password);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        self.cache = Some((salt.to_vec(), iterations, salted));
        salted
    }

    /// Computes client-final from server-first; remembers the server signature to expect.
    fn client_final(
        &mut self,
        client_first_bare: &str,
        nonce: &str,
        server_first: &[u8],
    ) -> Result<Bytes, AuthError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| AuthError::Malformed("server-first is not UTF-8".into()))?;
        let first = ServerFirst::parse(text)?;
        if !first.nonce.starts_with(nonce) || first.nonce.len() == nonce.len() {
            return Err(AuthError::Refused(
                "the server's nonce does not extend the client's".into(),
            ));
        }
        if first.iterations < MIN_ITERATIONS || first.iterations > self.max_iterations {
            return Err(AuthError::Refused(format!(
                "{} PBKDF2 iterations, outside {MIN_ITERATIONS}..={}",
                first.iterations, self.max_iterations
            )));
        }
        let salted = self.salted_password(&first.salt, first.iterations);
        let client_key = hmac(&salted, &[b"Client Key"])?;
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c={CHANNEL_BINDING},r={}", first.nonce);
        let auth_message = [
            client_first_bare.as_bytes(),
            b",",
            server_first,
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac(&stored_key, &auth_message)?;
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(client_signature) {
            *p ^= s;
        }
        let server_key = hmac(&salted, &[b"Server Key"])?;
        self.state = State::SentFinal {
            server_signature: hmac(&server_key, &auth_message)?,
        };
        Ok(Bytes::from(format!(
            "{without_proof},p={}",
            STANDARD.encode(proof)
        )))
    }
}

impl Authenticator for ScramSha256 {
    fn method(&self) -> &str {
        SCRAM_SHA_256
    }

    /// Sends client-first, `n,,n=<username>,r=<fresh nonce>`.
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        use rand::RngCore as _;
        let mut bytes = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        self.start_with_nonce(STANDARD.encode(bytes))
    }

    /// Answers server-first with client-final, `c=biws,r=<nonce>,p=<proof>`.
    fn step(&mut self, server_data: Option<&[u8]>) -> Result<Option<Bytes>, AuthError> {
        let State::SentFirst {
            client_first_bare,
            nonce,
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Err(AuthError::OutOfOrder(
                "a challenge after client-final (SCRAM has one)",
            ));
        };
        let server_first =
            server_data.ok_or_else(|| AuthError::Malformed("server-first has no data".into()))?;
        self.client_final(&client_first_bare, &nonce, server_first)
            .map(Some)
    }

    /// Checks server-final, `v=<server signature>` (or reports its `e=<error>`).
    fn finish(&mut self, server_data: Option<&[u8]>) -> Result<(), AuthError> {
        let State::SentFinal { server_signature } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Err(AuthError::OutOfOrder(
                "success before the server proved it knows the credentials",
            ));
        };
        let data = server_data
            .ok_or_else(|| AuthError::Malformed("success without server-final".into()))?;
        let text = std::str::from_utf8(data)
            .map_err(|_| AuthError::Malformed("server-final is not UTF-8".into()))?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(AuthError::ServerError(error.to_owned()));
        }
        let verifier = first
            .strip_prefix("v=")
            .ok_or_else(|| AuthError::Malformed("server-final has no v=".into()))?;
        let signature = STANDARD
            .decode(verifier)
            .map_err(|_| AuthError::Malformed("v= is not base64".into()))?;
        if bool::from(signature.as_slice().ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(AuthError::ServerNotVerified)
        }
    }
}

/// The attributes of server-first that matter to the client.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    /// `[m=...,]r=<nonce>,s=<salt>,i=<iterations>[,extensions]` (RFC 5802 section 7).
    fn parse(text: &'a str) -> Result<Self, AuthError> {
        let mut attributes = text.split(',');
        let mut next = |name: &str| {
            let attribute = attributes.next().unwrap_or_default();
            if let Some(error) = attribute.strip_prefix("e=") {
                return Err(AuthError::ServerError(error.to_owned()));
            }
            if attribute.starts_with("m=") {
                return Err(AuthError::Refused(
                    "a mandatory extension (m=) this client does not support".into(),
                ));
            }
            attribute
                .strip_prefix(name)
                .ok_or_else(|| AuthError::Malformed(format!("server-first has no {name}")))
        };
        let nonce = next("r=")?;
        let salt = next("s=")?;
        let iterations = next("i=")?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(AuthError::Malformed("the nonce is not printable".into()));
        }
        let salt = STANDARD
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Malformed("s= is not a base64 salt".into()))?;
        let iterations = iterations
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| iterations.parse::<u32>().ok())
            .flatten()
            .ok_or_else(|| AuthError::Malformed("i= is not a number".into()))?;
        // Optional extensions after i= are allowed and ignored (RFC 5802 section 5.1).
        Ok(ServerFirst {
            nonce,
            salt,
            iterations,
        })
    }
}

/// The username as a SCRAM `saslname`: `,` and `=` escaped as `=2C` and `=3D`.
fn saslname(username: &str) -> Result<Cow<'_, str>, AuthError> {
    if username.is_empty() || username.contains('\0') {
        return Err(AuthError::Credentials(
            "a SCRAM username must be non-empty and without NUL".into(),
        ));
    }
    if !username.contains([',', '=']) {
        return Ok(Cow::Borrowed(username));
    }
    Ok(Cow::Owned(username.replace('=', "=3D").replace(',', "=2C")))
}

/// SASLprep's mapping step (RFC 4013 section 2.1) for the password: non-ASCII spaces
/// (RFC 3454 table C.1.2) become U+0020, characters of table B.1 are removed. U+200B is
/// in both tables; the mapping to space wins, as in the broker.
fn saslprep_mappings(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200B}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}' => out.push(' '),
            '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// HMAC-SHA-256 of the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], AuthError> {
    // HMAC takes keys of any length; the error cannot happen but is not worth a panic.
    let mut mac = HmacSha256::new_from_slice(key)
        .map_err(|_| AuthError::Other("HMAC refused its key".into()))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3.
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// The RFC's user, after client-first with the RFC's nonce.
    fn rfc_client() -> ScramSha256 {
        let mut client = ScramSha256::new("user", "pencil");
        let first = client.start_with_nonce(CLIENT_NONCE.into()).unwrap();
        assert_eq!(first.as_deref(), Some(CLIENT_FIRST.as_bytes()));
        client
    }

    #[test]
    fn rfc7677_test_vector_gives_the_exact_client_final_and_accepts_server_final() {
        let mut client = rfc_client();
        let last = client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        assert_eq!(last.as_deref(), Some(CLIENT_FINAL.as_bytes()));
        client.finish(Some(SERVER_FINAL.as_bytes())).unwrap();
    }

    #[test]
    fn wrong_server_signature_is_refused() {
        let mut client = rfc_client();
        client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        // The RFC's signature with its first byte changed.
        let forged = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(
            client.finish(Some(forged.as_bytes())),
            Err(AuthError::ServerNotVerified)
        );
    }

    #[test]
    fn truncated_or_missing_server_signature_is_refused() {
        for server_final in [Some("v=6rriTRBi23WpRR/w".as_bytes()), Some(b"v="), None] {
            let mut client = rfc_client();
            client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
            assert!(client.finish(server_final).is_err(), "{server_final:?}");
        }
    }

    #[test]
    fn success_before_client_final_is_refused() {
        // A server that never challenges has not proved it knows the credentials.
        let mut client = rfc_client();
        assert!(matches!(
            client.finish(Some(SERVER_FINAL.as_bytes())),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn second_challenge_is_refused() {
        let mut client = rfc_client();
        client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        assert!(matches!(
            client.step(Some(SERVER_FIRST.as_bytes())),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn server_error_is_reported() {
        let mut client = rfc_client();
        client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        assert_eq!(
            client.finish(Some(b"e=invalid-proof")),
            Err(AuthError::ServerError("invalid-proof".into()))
        );
    }

    #[test]
    fn nonce_not_extending_ours_is_refused() {
        for nonce in [
            "r=XOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "r=rOprNGfwEbeRWgbNEkq",
            // Ours unchanged: the server added nothing.
            "r=rOprNGfwEbeRWgbNEkqO",
        ] {
            let mut client = rfc_client();
            let server_first = format!("{nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
            assert!(
                matches!(
                    client.step(Some(server_first.as_bytes())),
                    Err(AuthError::Refused(_))
                ),
                "{nonce}"
            );
        }
    }

    #[test]
    fn iteration_count_below_4096_is_refused_as_a_downgrade() {
        let mut client = rfc_client();
        let server_first = SERVER_FIRST.replace("i=4096", "i=4095");
        assert!(matches!(
            client.step(Some(server_first.as_bytes())),
            Err(AuthError::Refused(_))
        ));
    }

    #[test]
    fn iteration_count_above_the_maximum_is_refused() {
        let mut client = rfc_client().max_iterations(10_000);
        let server_first = SERVER_FIRST.replace("i=4096", "i=10001");
        assert!(matches!(
            client.step(Some(server_first.as_bytes())),
            Err(AuthError::Refused(_))
        ));
    }

    #[test]
    fn mandatory_extension_is_refused() {
        let mut client = rfc_client();
        let server_first = format!("m=ext,{SERVER_FIRST}");
        assert!(matches!(
            client.step(Some(server_first.as_bytes())),
            Err(AuthError::Refused(_))
        ));
    }

    #[test]
    fn optional_extensions_after_the_iteration_count_are_ignored() {
        let mut client = rfc_client();
        // The extension is part of the AuthMessage, so the RFC's proof no longer applies;
        // what matters is that the message is accepted.
        let server_first = format!("{SERVER_FIRST},x=1");
        assert!(client.step(Some(server_first.as_bytes())).is_ok());
    }

    #[test]
    fn malformed_server_first_is_refused() {
        for server_first in [
            "",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOx,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=not base64,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            "r=rOprNGfwEbeRWgbNEkqO x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let mut client = rfc_client();
            assert!(
                matches!(
                    client.step(Some(server_first.as_bytes())),
                    Err(AuthError::Malformed(_))
                ),
                "{server_first:?}"
            );
        }
        let mut client = rfc_client();
        assert!(client.step(Some(&[0xff, 0xfe])).is_err());
        let mut client = rfc_client();
        assert!(client.step(None).is_err());
    }

    #[test]
    fn each_start_draws_a_fresh_printable_nonce() {
        let mut client = ScramSha256::new("user", "pencil");
        let first = client.start().unwrap().unwrap();
        let second = client.start().unwrap().unwrap();
        assert_ne!(first, second);
        for message in [first, second] {
            let text = std::str::from_utf8(&message).unwrap();
            let nonce = text.strip_prefix("n,,n=user,r=").unwrap();
            assert_eq!(nonce.len(), 32);
            assert!(nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b','));
        }
    }

    #[test]
    fn restarting_forgets_the_exchange_in_progress() {
        let mut client = rfc_client();
        client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        client.start_with_nonce(CLIENT_NONCE.into()).unwrap();
        // Back at the first step: the same server-first gives the same client-final.
        let last = client.step(Some(SERVER_FIRST.as_bytes())).unwrap();
        assert_eq!(last.as_deref(), Some(CLIENT_FINAL.as_bytes()));
    }

    #[test]
    fn username_is_escaped_as_a_saslname() {
        let mut client = ScramSha256::new("a=b,c", "pencil");
        let first = client.start_with_nonce("abc".into()).unwrap().unwrap();
        assert_eq!(&first[..], b"n,,n=a=3Db=2Cc,r=abc");
        let mut empty = ScramSha256::new("", "pencil");
        assert!(matches!(empty.start(), Err(AuthError::Credentials(_))));
    }

    #[test]
    fn password_gets_saslprep_mappings() {
        assert_eq!(saslprep_mappings("pencil"), "pencil");
        assert_eq!(saslprep_mappings("pen\u{00A0}cil\u{00AD}"), "pen cil");
        assert_eq!(saslprep_mappings("a\u{200B}b\u{FEFF}"), "a b");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let client = ScramSha256::new("user", "pencil");
        let debug = format!("{client:?}");
        assert!(debug.contains("user") && !debug.contains("pencil"));
    }
}
