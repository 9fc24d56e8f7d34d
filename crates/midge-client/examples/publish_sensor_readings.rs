//! Publishes a (simulated) temperature reading every second at QoS 1, with a retained
//! "online" status and a will that marks the sensor offline if it vanishes.
//!
//! ```text
//! midge &                                  # a broker on localhost:1883
//! midge sub -t 'sensors/#' -v &
//! cargo run -p midge-client --example publish_sensor_readings -- localhost 1883 5
//! ```

use midge_client::{Client, ConnectOptions, Message, Properties, QoS, Reconnect, Will};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), midge_client::Error> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(1883);
    let count: u32 = args.next().and_then(|c| c.parse().ok()).unwrap_or(10);

    let options = ConnectOptions::new(host, port)
        .client_id("sensor-kitchen")
        .will(
            Will::new("sensors/kitchen/status", "offline")
                .qos(QoS::AtLeastOnce)
                .retain(true),
        )
        // Ride out broker restarts; readings published meanwhile wait in the offline buffer.
        .reconnect(Reconnect::default());
    let (client, _messages) = Client::connect(options).await?;
    client
        .publish("sensors/kitchen/status", "online", QoS::AtLeastOnce, true)
        .await?;

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for i in 0..count {
        ticker.tick().await;
        let celsius = 20.0 + f64::from(i % 10) * 0.1;
        let properties = Properties {
            content_type: Some("text/plain".into()),
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        let reading = Message::new("sensors/kitchen/temperature", format!("{celsius:.1}"))
            .qos(QoS::AtLeastOnce)
            .properties(properties);
        let ack = client.publish_message(reading).await?;
        println!(
            "reading {i}: {celsius:.1} °C acknowledged ({})",
            ack.reason_code
        );
    }
    client
        .publish("sensors/kitchen/status", "offline", QoS::AtLeastOnce, true)
        .await?;
    client.disconnect().await
}
