//! The client against the Midge broker started in-process on a free loopback port.
//! No sleeps: every wait is for a message or an acknowledgement, bounded by `WAIT`.

use midge_broker::{Broker, Config, ListenerConfig};
use midge_client::{
    Client, ConnectOptions, Disconnect, Error, Message, Messages, Properties, ProtocolVersion, QoS,
    ReasonCode, Subscription, Will,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

async fn broker() -> (Broker, u16) {
    broker_with(|_| {}).await
}

async fn broker_with(tweak: impl FnOnce(&mut Config)) -> (Broker, u16) {
    let mut config = Config {
        listeners: vec![ListenerConfig::tcp(
            "127.0.0.1:0".parse().expect("address"),
            true,
        )],
        sys_interval: Duration::ZERO,
        ..Default::default()
    };
    tweak(&mut config);
    let broker = Broker::start(config).await.expect("broker starts");
    let port = broker.local_addrs()[0].port();
    (broker, port)
}

fn options(port: u16, version: ProtocolVersion, id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .protocol(version)
        .client_id(id)
}

async fn connect(port: u16, version: ProtocolVersion, id: &str) -> (Client, Messages) {
    Client::connect(options(port, version, id))
        .await
        .expect("connects")
}

async fn next(messages: &mut Messages) -> Message {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("a message in time")
        .expect("the client is running")
}

#[tokio::test]
async fn publish_and_receive_at_each_qos_on_each_version() {
    let (_broker, port) = broker().await;
    for version in VERSIONS {
        let (sub, mut messages) = connect(port, version, &format!("sub-{version:?}")).await;
        let (publisher, _) = connect(port, version, &format!("pub-{version:?}")).await;
        let granted = sub
            .subscribe("q/#", QoS::ExactlyOnce)
            .await
            .expect("suback");
        assert_eq!(granted.reason_codes, vec![ReasonCode::GRANTED_QOS_2]);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("q/{}", qos.as_u8());
            let ack = publisher
                .publish(topic.as_str(), format!("payload {qos:?}"), qos, false)
                .await
                .expect("acknowledged");
            assert!(!ack.reason_code.is_error());
            let m = next(&mut messages).await;
            assert_eq!(m.topic, topic.as_str());
            assert_eq!(m.payload, format!("payload {qos:?}").as_bytes());
            assert_eq!(m.qos, qos);
            assert!(!m.retain);
        }
        sub.disconnect().await.expect("disconnects");
        publisher.disconnect().await.expect("disconnects");
    }
}

#[tokio::test]
async fn many_pipelined_publishes_all_complete_in_order() {
    let (_broker, port) = broker().await;
    let (sub, mut messages) = connect(port, ProtocolVersion::V5, "sink").await;
    sub.subscribe("load", QoS::AtLeastOnce)
        .await
        .expect("suback");
    let (publisher, _) = connect(port, ProtocolVersion::V5, "source").await;
    let mut acks = Vec::new();
    for i in 0..500u32 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let m = Message::new("load", i.to_string()).qos(qos);
        acks.push(publisher.start_publish(m).await.expect("queued"));
    }
    for ack in acks {
        ack.await.expect("acknowledged");
    }
    for i in 0..500u32 {
        assert_eq!(next(&mut messages).await.payload, i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let (_broker, port) = broker().await;
    let (publisher, _) = connect(port, ProtocolVersion::V311, "retainer").await;
    publisher
        .publish("status/door", "open", QoS::AtLeastOnce, true)
        .await
        .expect("acknowledged");
    let (sub, mut messages) = connect(port, ProtocolVersion::V311, "late").await;
    sub.subscribe("status/+", QoS::AtLeastOnce)
        .await
        .expect("suback");
    let m = next(&mut messages).await;
    assert!(m.retain);
    assert_eq!(m.payload, "open".as_bytes());
}

#[tokio::test]
async fn subscribe_many_and_unsubscribe_report_codes_per_filter() {
    let (_broker, port) = broker().await;
    let (client, _) = connect(port, ProtocolVersion::V5, "codes").await;
    let ack = client
        .subscribe_many(
            [
                Subscription::new("a", QoS::AtMostOnce),
                Subscription::new("b/#", QoS::AtLeastOnce),
            ],
            Properties::default(),
        )
        .await
        .expect("suback");
    assert_eq!(
        ack.reason_codes,
        vec![ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_1]
    );
    let ack = client
        .unsubscribe(["a", "never"], Properties::default())
        .await
        .expect("unsuback");
    assert_eq!(
        ack.reason_codes,
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let (v3, _) = connect(port, ProtocolVersion::V311, "codes-v3").await;
    let ack = v3
        .unsubscribe(["x"], Properties::default())
        .await
        .expect("unsuback");
    assert!(ack.reason_codes.is_empty());
}

#[tokio::test]
async fn invalid_topics_fail_before_reaching_the_wire() {
    let (_broker, port) = broker().await;
    let (client, _) = connect(port, ProtocolVersion::V5, "strict").await;
    let err = client.publish("a/+", "x", QoS::AtMostOnce, false).await;
    assert!(matches!(err, Err(Error::InvalidRequest(_))), "{err:?}");
    let err = client.subscribe("a/#/b", QoS::AtMostOnce).await;
    assert!(matches!(err, Err(Error::InvalidRequest(_))), "{err:?}");
    // The connection is still usable.
    client
        .publish("a/b", "x", QoS::AtLeastOnce, false)
        .await
        .expect("acknowledged");
}

#[tokio::test]
async fn v5_properties_travel_with_the_message() {
    let (_broker, port) = broker().await;
    let (client, mut messages) = connect(port, ProtocolVersion::V5, "props").await;
    client
        .subscribe("req", QoS::AtLeastOnce)
        .await
        .expect("suback");
    let properties = Properties {
        response_topic: Some("resp".into()),
        correlation_data: Some("42".into()),
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    let m = Message::new("req", "ping")
        .qos(QoS::AtLeastOnce)
        .properties(properties);
    client.publish_message(m).await.expect("acknowledged");
    let got = next(&mut messages).await;
    assert_eq!(got.properties.response_topic.as_deref(), Some("resp"));
    assert_eq!(got.properties.correlation_data.as_deref(), Some(&b"42"[..]));
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        got.properties.user_properties,
        vec![("k".into(), "v".into())]
    );
}

#[tokio::test]
async fn will_is_published_on_disconnect_with_will() {
    let (_broker, port) = broker().await;
    let (watcher, mut messages) = connect(port, ProtocolVersion::V5, "watcher").await;
    watcher
        .subscribe("wills/#", QoS::AtLeastOnce)
        .await
        .expect("suback");
    let opts = options(port, ProtocolVersion::V5, "mortal")
        .will(Will::new("wills/mortal", "gone").qos(QoS::AtLeastOnce));
    let (mortal, _) = Client::connect(opts).await.expect("connects");
    mortal
        .disconnect_with(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL,
            properties: Properties::default(),
        })
        .await
        .expect("disconnects");
    let m = next(&mut messages).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("wills/mortal", &b"gone"[..])
    );
}

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let (_broker, port) = broker().await;
    for version in VERSIONS {
        let id = format!("durable-{version:?}");
        let opts = || {
            options(port, version, &id)
                .clean_start(false)
                .session_expiry(600)
        };
        let (client, _) = Client::connect(opts()).await.expect("connects");
        client
            .subscribe("away", QoS::AtLeastOnce)
            .await
            .expect("suback");
        client.disconnect().await.expect("disconnects");

        let (publisher, _) = connect(port, version, &format!("p-{version:?}")).await;
        publisher
            .publish("away", "queued", QoS::AtLeastOnce, false)
            .await
            .expect("acked");

        let (client, mut messages) = Client::connect(opts()).await.expect("reconnects");
        assert!(client.connection_info().session_present);
        let m = next(&mut messages).await;
        assert_eq!(m.payload, "queued".as_bytes());
    }
}

#[tokio::test]
async fn server_assigns_a_client_id_when_ours_is_empty() {
    let (_broker, port) = broker().await;
    let (client, _) = Client::connect(ConnectOptions::new("127.0.0.1", port))
        .await
        .expect("connects");
    let info = client.connection_info();
    assert!(!info.client_id.is_empty());
    assert_eq!(
        info.properties.assigned_client_identifier,
        Some(info.client_id.clone())
    );
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_an_io_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = Client::connect(ConnectOptions::new("127.0.0.1", port)).await;
    assert!(matches!(err, Err(Error::Io(_))), "{err:?}");
}

#[tokio::test]
async fn refused_connection_reports_the_reason_code() {
    let (_broker, port) = broker_with(|c| c.listeners[0].allow_anonymous = false).await;
    for version in VERSIONS {
        let err = Client::connect(options(port, version, "anon")).await;
        let code = match err {
            Err(Error::ConnectionRefused { reason_code, .. }) => reason_code,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(code.is_error());
    }
}

#[tokio::test]
async fn messages_end_with_the_reason_after_disconnect() {
    let (_broker, port) = broker().await;
    let (client, mut messages) = connect(port, ProtocolVersion::V5, "ender").await;
    client.disconnect().await.expect("disconnects");
    assert!(tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("ends")
        .is_none());
    assert!(messages.close_reason().is_none());
    let err = client.publish("t", "x", QoS::AtMostOnce, false).await;
    assert!(matches!(err, Err(Error::Closed)), "{err:?}");
}

#[tokio::test]
async fn topic_aliases_from_the_broker_are_resolved() {
    let (_broker, port) = broker().await;
    let opts = options(port, ProtocolVersion::V5, "aliased").topic_alias_maximum(5);
    let (sub, mut messages) = Client::connect(opts).await.expect("connects");
    sub.subscribe("alias/#", QoS::AtMostOnce)
        .await
        .expect("suback");
    let (publisher, _) = connect(port, ProtocolVersion::V5, "aliaser").await;
    for i in 0..3 {
        let topic = format!("alias/{}", i % 2);
        publisher
            .publish(topic.as_str(), i.to_string(), QoS::AtLeastOnce, false)
            .await
            .expect("acked");
    }
    for i in 0..3 {
        let m = next(&mut messages).await;
        assert_eq!(m.topic, format!("alias/{}", i % 2).as_str());
        assert_eq!(m.payload, i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn reconnects_after_a_broker_restart_and_delivers_what_was_buffered() {
    let (first, port) = broker().await;
    let reconnect = midge_client::Reconnect {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: None,
    };
    let opts = options(port, ProtocolVersion::V5, "survivor").reconnect(reconnect);
    let (client, mut messages) = Client::connect(opts).await.expect("connects");
    client
        .subscribe("again", QoS::AtLeastOnce)
        .await
        .expect("suback");
    first.shutdown(Duration::from_secs(1)).await;

    // Queued while the broker is away (or sent, if the client has not noticed yet: then
    // resent after the reconnection; either way it arrives once the broker is back).
    let pending = client
        .start_publish(Message::new("again", "after restart").qos(QoS::AtLeastOnce))
        .await
        .expect("queued");
    let config = Config {
        listeners: vec![ListenerConfig::tcp(
            format!("127.0.0.1:{port}").parse().expect("address"),
            true,
        )],
        sys_interval: Duration::ZERO,
        ..Default::default()
    };
    let _second = Broker::start(config)
        .await
        .expect("restarts on the same port");
    tokio::time::timeout(WAIT * 2, pending)
        .await
        .expect("acknowledged in time")
        .expect("acknowledged");
    // The new broker had no session: the client subscribed again by itself.
    let m = next(&mut messages).await;
    assert_eq!(m.payload, "after restart".as_bytes());
}

#[tokio::test]
async fn broker_respects_our_maximum_packet_size() {
    let (_broker, port) = broker().await;
    let opts = options(port, ProtocolVersion::V5, "small").maximum_packet_size(128);
    let (client, mut messages) = Client::connect(opts).await.expect("connects");
    client
        .subscribe("size/#", QoS::AtLeastOnce)
        .await
        .expect("suback");
    let (publisher, _) = connect(port, ProtocolVersion::V5, "big").await;
    publisher
        .publish("size/big", vec![b'x'; 500], QoS::AtLeastOnce, false)
        .await
        .expect("acked");
    publisher
        .publish("size/small", "fits", QoS::AtLeastOnce, false)
        .await
        .expect("acked");
    // The large message is dropped for us [MQTT-3.1.2-25]; the connection stays up.
    let m = next(&mut messages).await;
    assert_eq!(m.payload, "fits".as_bytes());
    assert!(messages.close_reason().is_none());
}

#[tokio::test]
async fn subscription_options_and_identifiers() {
    let (_broker, port) = broker().await;
    let (client, mut messages) = connect(port, ProtocolVersion::V5, "opts").await;
    let properties = Properties {
        subscription_identifiers: vec![7],
        ..Properties::default()
    };
    client
        .subscribe_many(
            [Subscription::new("mine/#", QoS::AtLeastOnce).no_local(true)],
            properties,
        )
        .await
        .expect("suback");
    let rap = Properties {
        subscription_identifiers: vec![9],
        ..Properties::default()
    };
    client
        .subscribe_many(
            [Subscription::new("kept/#", QoS::AtLeastOnce).retain_as_published(true)],
            rap,
        )
        .await
        .expect("suback");
    // No local: our own message on mine/ does not come back.
    client
        .publish("mine/1", "own", QoS::AtLeastOnce, false)
        .await
        .expect("acked");
    let (other, _) = connect(port, ProtocolVersion::V5, "other").await;
    other
        .publish("mine/2", "theirs", QoS::AtLeastOnce, false)
        .await
        .expect("acked");
    let m = next(&mut messages).await;
    assert_eq!(m.payload, "theirs".as_bytes());
    assert_eq!(m.properties.subscription_identifiers, vec![7]);
    // Retain as published: a live retained message keeps its flag.
    other
        .publish("kept/1", "flagged", QoS::AtLeastOnce, true)
        .await
        .expect("acked");
    let m = next(&mut messages).await;
    assert_eq!(m.payload, "flagged".as_bytes());
    assert!(m.retain);
    assert_eq!(m.properties.subscription_identifiers, vec![9]);
}
