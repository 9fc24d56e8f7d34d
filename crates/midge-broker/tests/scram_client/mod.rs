//! The client's side of SCRAM-SHA-256 (RFC 5802, RFC 7677), enough to drive the broker in
//! tests. Shared by `scram.rs` (the state machine) and `enhanced_auth.rs` (over MQTT).
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pbkdf2::hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The client's side of RFC 5802, enough to drive the server in tests.
pub struct Client {
    pub gs2_header: &'static str,
    first_bare: String,
}

impl Client {
    pub fn new(username: &str, client_nonce: &str) -> Client {
        Client {
            gs2_header: "n,,",
            first_bare: format!("n={username},r={client_nonce}"),
        }
    }

    pub fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.first_bare).into_bytes()
    }

    /// Computes client-final from server-first; also returns the server-final to expect.
    pub fn last(&self, server_first: &[u8], password: &str) -> (Vec<u8>, Vec<u8>) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut parts = server_first.split(',');
        let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = parts
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(self.gs2_header));
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
            format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        )
    }
}
