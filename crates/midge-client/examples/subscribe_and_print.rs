//! Subscribes to a filter and prints every message (topic, QoS, payload) until Ctrl-C.
//!
//! ```text
//! cargo run -p midge-client --example subscribe_and_print -- localhost 1883 'sensors/#'
//! ```

use futures_core::Stream;
use midge_client::{Client, ConnectOptions, Message, QoS};
use std::pin::Pin;
use std::task::{Context, Poll};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), midge_client::Error> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(1883);
    let filter = args.next().unwrap_or_else(|| "#".into());

    let (client, mut messages) = Client::connect(ConnectOptions::new(host, port)).await?;
    let granted = client.subscribe(filter.as_str(), QoS::AtLeastOnce).await?;
    eprintln!("subscribed to {filter}: {:?}", granted.reason_codes);

    loop {
        tokio::select! {
            // `Messages` is also a `Stream`; `recv` is the plain async way to read it.
            message = next(&mut messages) => match message {
                Some(m) => print(&m),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(reason) = messages.close_reason() {
        eprintln!("connection ended: {reason}");
    }
    client.disconnect().await
}

/// Reads the stream through `Stream::poll_next`, as any stream combinator would.
async fn next(messages: &mut midge_client::Messages) -> Option<Message> {
    std::future::poll_fn(|cx: &mut Context<'_>| -> Poll<Option<Message>> {
        Pin::new(&mut *messages).poll_next(cx)
    })
    .await
}

fn print(m: &Message) {
    let payload = String::from_utf8_lossy(&m.payload);
    println!(
        "{} [qos {}{}] {payload}",
        m.topic,
        m.qos.as_u8(),
        if m.retain { ", retained" } else { "" }
    );
}
