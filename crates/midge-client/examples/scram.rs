//! Logs in with SCRAM-SHA-256 (MQTT 5.0 enhanced authentication), publishes a message,
//! re-authenticates on the open connection, and disconnects. The password never crosses
//! the wire, and the connection is only trusted once the broker has proved it holds the
//! user's keys.
//!
//! With a Midge broker whose `scram_file` has the user:
//!
//! ```text
//! midge passwd -H scram-sha-256 -b /etc/midge/scram alice wonderland
//! MIDGE_PASSWORD=wonderland cargo run -p midge-client --example scram -- localhost 1883 alice
//! ```

use midge_client::{Client, ConnectOptions, QoS, Reconnect, ScramSha256};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), midge_client::Error> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(1883);
    let username = args.next().unwrap_or_else(|| "alice".into());
    // From the environment rather than the command line, where `ps` would show it.
    let password = std::env::var("MIDGE_PASSWORD").unwrap_or_default();

    let options = ConnectOptions::new(host, port)
        .client_id(format!("scram-example-{username}"))
        .authenticator(ScramSha256::new(username.as_str(), password))
        // Each reconnection runs a new SCRAM exchange, with a fresh nonce.
        .reconnect(Reconnect::default());
    let (client, _messages) = match Client::connect(options).await {
        Ok(connected) => connected,
        Err(e) => {
            // 0x87 Not authorized: wrong password or unknown user (the broker does not
            // say which). `Error::Authentication`: the broker failed to prove itself.
            eprintln!("login as {username} failed: {e}");
            return Err(e);
        }
    };
    eprintln!("logged in as {username}; the broker proved it knows the credentials");

    let topic = format!("{username}/greeting");
    client
        .publish(topic.as_str(), "hello", QoS::AtLeastOnce, false)
        .await?;
    eprintln!("published to {topic}");

    // Long-lived connections can prove again that the user's credentials still hold.
    client.reauthenticate().await?;
    eprintln!("re-authenticated");

    client.disconnect().await
}
