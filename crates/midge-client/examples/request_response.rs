//! MQTT 5 request/response: a responder answers on each request's Response Topic with
//! its Correlation Data; a requester sends three requests and matches the answers.
//! Both run in this one process, on the broker given on the command line.
//!
//! ```text
//! cargo run -p midge-client --example request_response -- localhost 1883
//! ```

use midge_client::{Client, ConnectOptions, Message, Properties, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), midge_client::Error> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(1883);

    // The responder: uppercases whatever it is asked.
    let (responder, mut requests) =
        Client::connect(ConnectOptions::new(host.clone(), port).client_id("upper-service")).await?;
    responder
        .subscribe("service/upper", QoS::AtLeastOnce)
        .await?;
    let serve = tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let Some(reply_to) = request.properties.response_topic.clone() else {
                continue;
            };
            let properties = Properties {
                correlation_data: request.properties.correlation_data.clone(),
                ..Properties::default()
            };
            let answer = String::from_utf8_lossy(&request.payload).to_uppercase();
            let reply = Message::new(reply_to, answer)
                .qos(QoS::AtLeastOnce)
                .properties(properties);
            if responder.publish_message(reply).await.is_err() {
                break;
            }
        }
    });

    // The requester.
    let (requester, mut replies) =
        Client::connect(ConnectOptions::new(host, port).client_id("upper-client")).await?;
    requester
        .subscribe("replies/upper-client", QoS::AtLeastOnce)
        .await?;
    for (i, word) in ["midge", "mqtt", "tokio"].iter().enumerate() {
        let properties = Properties {
            response_topic: Some("replies/upper-client".into()),
            correlation_data: Some(i.to_string().into()),
            ..Properties::default()
        };
        let request = Message::new("service/upper", *word)
            .qos(QoS::AtLeastOnce)
            .properties(properties);
        requester.publish_message(request).await?;
        let Some(reply) = replies.recv().await else {
            break;
        };
        let id = reply
            .properties
            .correlation_data
            .as_deref()
            .unwrap_or_default();
        println!(
            "request {} ({word}) -> {}",
            String::from_utf8_lossy(id),
            String::from_utf8_lossy(&reply.payload)
        );
    }
    requester.disconnect().await?;
    serve.abort();
    Ok(())
}
