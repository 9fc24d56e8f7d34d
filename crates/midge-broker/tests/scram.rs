//! SCRAM-SHA-256 exchanges against `auth::scram`: the RFC 7677 test vector, failures that
//! must look alike (wrong password, unknown user), malformed messages, re-authentication,
//! the credentials file, and random input that must never panic.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use midge_broker::auth::scram::{
    ScramCredentialSource, ScramCredentials, ScramError, ScramFile, ScramServer, ServerNonce,
    DEFAULT_ITERATIONS, NONCE_LEN,
};
use midge_broker::auth::Reloadable;
use midge_proto::ReasonCode;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

mod scram_client;
use scram_client::Client;

const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// The RFC's user "user" with password "pencil", plus "alice" with "wonderland". Derived once:
/// PBKDF2 is slow in debug builds and the property tests call this hundreds of times.
fn users() -> &'static HashMap<String, ScramCredentials> {
    static USERS: OnceLock<HashMap<String, ScramCredentials>> = OnceLock::new();
    USERS.get_or_init(|| {
        let salt = STANDARD.decode(RFC_SALT).unwrap();
        HashMap::from([
            (
                "user".to_owned(),
                ScramCredentials::derive(b"pencil", &salt, 4096),
            ),
            (
                "alice".to_owned(),
                ScramCredentials::generate("wonderland", DEFAULT_ITERATIONS).unwrap(),
            ),
        ])
    })
}

fn nonce(byte: u8) -> ServerNonce {
    ServerNonce::from_bytes([byte; NONCE_LEN])
}

/// Runs a whole exchange; returns the server-first and the outcome.
fn exchange(
    source: &dyn ScramCredentialSource,
    username: &str,
    password: &str,
) -> (Vec<u8>, Result<Vec<u8>, ScramError>) {
    let client = Client::new(username, "fyko+d2lbbFgONRv9qkxdawL");
    let (server, server_first) = ScramServer::start(source, &client.first(), nonce(7)).unwrap();
    let (client_final, expected_server_final) = client.last(&server_first, password);
    let outcome = server.finish(&client_final).map(|ok| {
        assert_eq!(ok.username, username);
        assert_eq!(ok.server_final, expected_server_final);
        ok.server_final
    });
    (server_first, outcome)
}

#[test]
fn rfc7677_test_vector_gives_the_exact_messages() {
    let source = users().clone();
    let (server, server_first) = ScramServer::start(
        &source,
        RFC_CLIENT_FIRST.as_bytes(),
        ServerNonce::from_text(RFC_SERVER_NONCE).unwrap(),
    )
    .unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
    assert_eq!(server.username(), "user");
    let success = server.finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(success.username, "user");
    assert_eq!(
        String::from_utf8(success.server_final).unwrap(),
        RFC_SERVER_FINAL
    );
}

#[test]
fn test_client_reproduces_the_rfc_client_final() {
    // Checks the test's own client against the RFC before trusting it elsewhere.
    let client = Client::new("user", "rOprNGfwEbeRWgbNEkqO");
    assert_eq!(client.first(), RFC_CLIENT_FIRST.as_bytes());
    let (client_final, server_final) = client.last(RFC_SERVER_FIRST.as_bytes(), "pencil");
    assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
}

#[test]
fn correct_password_authenticates_with_a_random_salt_user() {
    let (_, outcome) = exchange(users(), "alice", "wonderland");
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[test]
fn wrong_password_fails_at_the_proof_step_with_not_authorized() {
    let (_, outcome) = exchange(users(), "alice", "looking-glass");
    let err = outcome.unwrap_err();
    assert_eq!(err, ScramError::InvalidProof);
    assert_eq!(err.reason_code(), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(err.server_final(), b"e=invalid-proof");
}

/// `r=<nonce>,s=<salt>,i=<n>` split into its three values.
fn server_first_fields(msg: &[u8]) -> (String, Vec<u8>, String) {
    let text = String::from_utf8(msg.to_vec()).unwrap();
    let fields: Vec<&str> = text.split(',').collect();
    assert_eq!(fields.len(), 3, "{text}");
    (
        fields[0].strip_prefix("r=").unwrap().to_owned(),
        STANDARD
            .decode(fields[1].strip_prefix("s=").unwrap())
            .unwrap(),
        fields[2].strip_prefix("i=").unwrap().to_owned(),
    )
}

#[test]
fn unknown_user_is_indistinguishable_from_a_wrong_password() {
    let source = users().clone();
    let (known_first, known) = exchange(&source, "alice", "guess");
    let (ghost_first, ghost) = exchange(&source, "mallory", "guess");
    assert_eq!(known, ghost, "same failure");

    let (known_nonce, known_salt, known_iterations) = server_first_fields(&known_first);
    let (ghost_nonce, ghost_salt, ghost_iterations) = server_first_fields(&ghost_first);
    assert_eq!(ghost_nonce.len(), known_nonce.len());
    assert_eq!(ghost_salt.len(), known_salt.len());
    assert_eq!(ghost_iterations, known_iterations);

    // The decoy salt does not change between attempts, as a real one would not.
    let (again_first, _) = exchange(&source, "mallory", "other guess");
    assert_eq!(server_first_fields(&again_first).1, ghost_salt);
    let (other_first, _) = exchange(&source, "trudy", "guess");
    assert_ne!(server_first_fields(&other_first).1, ghost_salt);
}

#[test]
fn decoys_follow_the_shape_of_the_credentials_file() {
    let c = ScramCredentials::derive(b"pw", &[9; 24], 15_000);
    let file = ScramFile::parse(
        std::path::Path::new("scram"),
        ScramFile::line("bob", &c).as_bytes(),
    )
    .unwrap();
    let (_, ghost) = exchange(&file, "nobody", "pw");
    assert_eq!(ghost, Err(ScramError::InvalidProof));
    let client = Client::new("nobody", "abc");
    let (_, first) = ScramServer::start(&file, &client.first(), nonce(1)).unwrap();
    let (_, salt, iterations) = server_first_fields(&first);
    assert_eq!((salt.len(), iterations.as_str()), (24, "15000"));
}

#[test]
fn malformed_client_first_messages_fail_cleanly() {
    let source = users().clone();
    let cases: &[(&[u8], ScramError)] = &[
        (b"", ScramError::Malformed("no gs2 header")),
        (b"n", ScramError::Malformed("no gs2 header")),
        (b"n,", ScramError::Malformed("no gs2 header")),
        (b"n,,", ScramError::Malformed("no username")),
        (
            b"x,,n=user,r=abc",
            ScramError::Malformed("bad channel binding flag"),
        ),
        (
            b"p=tls-unique,,n=user,r=abc",
            ScramError::ChannelBindingNotSupported,
        ),
        (b"n,,m=ext,n=user,r=abc", ScramError::ExtensionsNotSupported),
        (b"n,,n=user", ScramError::Malformed("no nonce")),
        (b"n,,n=user,r=", ScramError::Malformed("bad nonce")),
        (b"n,,n=user,r=a b", ScramError::Malformed("bad nonce")),
        (b"n,,n=,r=abc", ScramError::InvalidUsername),
        (b"n,,n=us=er,r=abc", ScramError::InvalidUsername),
        (b"n,,n=us\x01er,r=abc", ScramError::InvalidUsername),
        (b"n,,n=user,r=abc,", ScramError::Malformed("bad attribute")),
        (b"n,,n=\xff,r=abc", ScramError::Malformed("not UTF-8")),
        (b"n,a=bob,n=user,r=abc", ScramError::AuthzidNotSupported),
        (
            b"n,zz,n=user,r=abc",
            ScramError::Malformed("bad authorization identity"),
        ),
    ];
    for (msg, expected) in cases {
        let err = ScramServer::start(&source, msg, nonce(0)).unwrap_err();
        assert_eq!(err, *expected, "{}", String::from_utf8_lossy(msg));
        assert_eq!(err.reason_code(), ReasonCode::NOT_AUTHORIZED);
    }
    let huge = format!("n,,n=user,r={}", "a".repeat(5000));
    assert_eq!(
        ScramServer::start(&source, huge.as_bytes(), nonce(0)).unwrap_err(),
        ScramError::Malformed("message too long")
    );
}

#[test]
fn malformed_client_final_messages_fail_cleanly() {
    let source = users().clone();
    let client = Client::new("alice", "abc");
    let start = || ScramServer::start(&source, &client.first(), nonce(3)).unwrap();
    let (_, server_first) = start();
    let (good, _) = client.last(&server_first, "wonderland");
    let good = String::from_utf8(good).unwrap();
    let full_nonce = server_first_fields(&server_first).0;
    let proof = good.rsplit_once(",p=").unwrap().1.to_owned();

    let cases: Vec<(String, ScramError)> = vec![
        (String::new(), ScramError::Malformed("no proof")),
        (
            good.replace(",p=", ",q="),
            ScramError::Malformed("no proof"),
        ),
        (
            format!("r={full_nonce},p={proof}"),
            ScramError::Malformed("no channel binding"),
        ),
        (
            format!("c=biws,p={proof}"),
            ScramError::Malformed("no nonce"),
        ),
        (
            good.replace("c=biws", "c=!!!"),
            ScramError::Malformed("channel binding is not base64"),
        ),
        (
            good.replace("c=biws", "c=eSws"),
            ScramError::ChannelBindingMismatch,
        ),
        (good.replace(&full_nonce, "abc"), ScramError::NonceMismatch),
        (
            format!("c=biws,r={full_nonce},p=AAAA"),
            ScramError::Malformed("proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={full_nonce},p=*"),
            ScramError::Malformed("proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={full_nonce},1,p={proof}"),
            ScramError::Malformed("bad attribute"),
        ),
    ];
    for (msg, expected) in cases {
        let (server, _) = start();
        assert_eq!(
            server.finish(msg.as_bytes()).unwrap_err(),
            expected,
            "{msg}"
        );
    }
    // An ignored extension changes the AuthMessage: the old proof no longer fits.
    let (server, _) = start();
    let with_ext = good.replace(",p=", ",x=1,p=");
    assert_eq!(
        server.finish(with_ext.as_bytes()).unwrap_err(),
        ScramError::InvalidProof
    );
    let (server, _) = start();
    assert!(server.finish(good.as_bytes()).is_ok());
}

#[test]
fn y_flag_is_accepted_without_channel_binding() {
    let source = users().clone();
    let mut client = Client::new("alice", "abc");
    client.gs2_header = "y,,";
    let (server, server_first) = ScramServer::start(&source, &client.first(), nonce(4)).unwrap();
    let (client_final, expected) = client.last(&server_first, "wonderland");
    assert_eq!(server.finish(&client_final).unwrap().server_final, expected);
}

#[test]
fn reauthentication_runs_the_same_exchange_for_the_same_user() {
    let source = users().clone();
    // CONNECT with client-first, AUTH 0x18 server-first, AUTH 0x18 client-final, CONNACK.
    let (first, outcome) = exchange(&source, "alice", "wonderland");
    outcome.unwrap();
    // AUTH 0x19 with a new client-first, AUTH 0x18, AUTH 0x18, AUTH 0x00 with server-final.
    let client = Client::new("alice", "second-nonce");
    let (server, again) =
        ScramServer::start_reauthentication(&source, &client.first(), nonce(8), "alice").unwrap();
    assert_ne!(server_first_fields(&again).0, server_first_fields(&first).0);
    let (client_final, expected) = client.last(&again, "wonderland");
    let success = server.finish(&client_final).unwrap();
    assert_eq!(
        (success.username.as_str(), success.server_final),
        ("alice", expected)
    );

    // Someone else's credentials cannot be swapped in on an authenticated connection.
    let user = Client::new("user", "x");
    assert_eq!(
        ScramServer::start_reauthentication(&source, &user.first(), nonce(9), "alice").unwrap_err(),
        ScramError::UsernameChanged
    );
    // A failed re-authentication fails like a failed first one.
    let client = Client::new("alice", "third");
    let (server, again) =
        ScramServer::start_reauthentication(&source, &client.first(), nonce(10), "alice").unwrap();
    let (client_final, _) = client.last(&again, "wrong");
    assert_eq!(
        server.finish(&client_final).unwrap_err(),
        ScramError::InvalidProof
    );
}

#[test]
fn saslprepped_password_matches_what_a_client_sends() {
    // A no-break space in the password is sent as a plain space by SASLprep clients.
    let mut source = HashMap::new();
    source.insert(
        "carol".to_owned(),
        ScramCredentials::generate("open\u{00A0}sesame", 4096).unwrap(),
    );
    assert!(exchange(&source, "carol", "open sesame").1.is_ok());
    assert!(ScramCredentials::generate("bad\u{0}", 4096).is_err());
}

#[test]
fn usernames_with_escaped_commas_and_equals_are_looked_up_decoded() {
    let mut source = HashMap::new();
    source.insert(
        "a,b=c".to_owned(),
        ScramCredentials::generate("pw", 4096).unwrap(),
    );
    let client = Client::new("a=2Cb=3Dc", "n0nce");
    let (server, server_first) = ScramServer::start(&source, &client.first(), nonce(5)).unwrap();
    assert_eq!(server.username(), "a,b=c");
    let (client_final, _) = client.last(&server_first, "pw");
    assert_eq!(server.finish(&client_final).unwrap().username, "a,b=c");
}

#[test]
fn credentials_file_reloads_and_keeps_old_users_on_error() {
    let dir = std::env::temp_dir().join(format!("midge-scram-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scram");
    let alice = ScramCredentials::generate("wonderland", 4096).unwrap();
    std::fs::write(&path, ScramFile::line("alice", &alice) + "\n").unwrap();
    let file: Reloadable<ScramFile> = Reloadable::open(&path).unwrap();
    assert!(exchange(&file, "alice", "wonderland").1.is_ok());

    std::fs::write(&path, "alice:$7$101$bad\n").unwrap();
    let err = file.reload().unwrap_err();
    assert!(err.to_string().contains(":1:"), "{err}");
    assert!(exchange(&file, "alice", "wonderland").1.is_ok());

    let bob = ScramCredentials::generate("builder", 4096).unwrap();
    std::fs::write(&path, ScramFile::line("bob", &bob)).unwrap();
    file.reload().unwrap();
    assert_eq!(
        exchange(&file, "alice", "wonderland").1,
        Err(ScramError::InvalidProof)
    );
    assert!(exchange(&file, "bob", "builder").1.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A valid client-first or client-final with a few bytes changed.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..base.len(), any::<u8>()), 0..4).prop_map(move |edits| {
        let mut bytes = base.as_bytes().to_vec();
        for (at, b) in edits {
            bytes[at] = b;
        }
        bytes
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(first in prop::collection::vec(any::<u8>(), 0..200),
                                last in prop::collection::vec(any::<u8>(), 0..200)) {
        let source = users().clone();
        if let Ok((server, _)) = ScramServer::start(&source, &first, nonce(1)) {
            let _ = server.finish(&last);
        }
    }

    #[test]
    fn mutated_rfc_messages_never_panic_and_rarely_pass(first in mutated(RFC_CLIENT_FIRST),
                                                       last in mutated(RFC_CLIENT_FINAL)) {
        let source = users().clone();
        let server_nonce = ServerNonce::from_text(RFC_SERVER_NONCE).unwrap();
        if let Ok((server, _)) = ScramServer::start(&source, &first, server_nonce) {
            if let Ok(success) = server.finish(&last) {
                // Only edits that cannot change the meaning may still authenticate.
                prop_assert_eq!(success.username, "user");
                prop_assert_eq!(&last[..], RFC_CLIENT_FINAL.as_bytes());
            }
        }
    }
}
