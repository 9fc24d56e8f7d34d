//! The password and ACL files wired into the broker: CONNACK codes for credentials,
//! publish / subscribe / delivery decisions, `$SYS` protection and reload.
//!
//! Password files are written by Debian's real `mosquitto_passwd` (installed by `.ci/run`;
//! the tests fail, never skip, without it).

mod common;

use common::{TempDir, TestBroker, TestClient};
use midge_proto::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};
use std::path::Path;
use std::process::Command;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn mosquitto_passwd(file: &Path, create: bool, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    cmd.arg("-b");
    if create {
        cmd.arg("-c");
    }
    let status = cmd
        .arg(file)
        .arg(user)
        .arg(password)
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd failed");
}

const ACL: &str = "\
# anonymous clients: nothing
user alice
topic readwrite alice/#
topic read public/#
topic read secret/#
topic deny secret/hidden
user bob
topic write public/#
topic write alice/#
topic write secret/#
pattern readwrite own/%u/#
";

/// A broker with alice/wonderland and bob/builder, the ACL above, no anonymous access.
async fn secured(dir: &TempDir) -> TestBroker {
    let pw = dir.path("passwd");
    mosquitto_passwd(&pw, true, "alice", "wonderland");
    mosquitto_passwd(&pw, false, "bob", "builder");
    let acl = dir.path("acl");
    std::fs::write(&acl, ACL).expect("acl written");
    TestBroker::start_with(|c| {
        c.password_file = Some(pw);
        c.acl_file = Some(acl);
        if let Some(l) = c.listeners.first_mut() {
            l.allow_anonymous = false;
        }
    })
    .await
}

async fn login(
    b: &TestBroker,
    v: ProtocolVersion,
    id: &str,
    user: &str,
    pass: &str,
) -> (TestClient, ReasonCode) {
    let (client, ack) = TestClient::connect(b.addr, v, |c| {
        c.client_id = ByteStr::from(id);
        c.username = Some(ByteStr::from(user));
        c.password = Some(bytes::Bytes::copy_from_slice(pass.as_bytes()));
    })
    .await;
    (client, ack.reason_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_password_connects_and_wrong_or_missing_is_refused() {
    let dir = TempDir::new("login");
    let b = secured(&dir).await;
    let (_c, rc) = login(&b, V5, "a1", "alice", "wonderland").await;
    assert_eq!(rc, ReasonCode::SUCCESS);
    // 5.0: Bad User Name or Password [MQTT-3.2.2-? 0x86].
    let (_c, rc) = login(&b, V5, "a2", "alice", "nope").await;
    assert_eq!(rc, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_c, rc) = login(&b, V5, "a3", "mallory", "x").await;
    assert_eq!(rc, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    // 3.1.1: return code 5, "not authorised", as Mosquitto answers.
    let (_c, rc) = login(&b, V311, "a4", "alice", "nope").await;
    assert_eq!(rc, ReasonCode::NOT_AUTHORIZED);
    // Anonymous: not allowed on this listener.
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = ByteStr::from("anon")).await;
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_decides_subscribe_publish_and_delivery() {
    let dir = TempDir::new("acl");
    let b = secured(&dir).await;
    let (mut alice, rc) = login(&b, V5, "alice-1", "alice", "wonderland").await;
    assert_eq!(rc, ReasonCode::SUCCESS);
    let (mut bob, rc) = login(&b, V5, "bob-1", "bob", "builder").await;
    assert_eq!(rc, ReasonCode::SUCCESS);

    // Subscribing where no rule allows reading: SUBACK 0x87 (5.0).
    alice
        .send(&Packet::Subscribe(midge_proto::Subscribe {
            packet_id: 7,
            filters: vec![(ByteStr::from("bob/#"), common::opts(QoS::AtLeastOnce))],
            properties: Default::default(),
        }))
        .await;
    match alice.recv().await {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![ReasonCode::NOT_AUTHORIZED]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    alice.subscribe("public/#", QoS::AtLeastOnce).await;
    alice.subscribe("secret/#", QoS::AtLeastOnce).await;

    // Bob may write public/ and secret/: alice receives, except what a deny hides.
    assert_eq!(
        bob.publish("secret/hidden", "no", QoS::AtLeastOnce)
            .await
            .map(|a| a.reason_code),
        Some(ReasonCode::SUCCESS)
    );
    bob.publish("secret/open", "yes", QoS::AtLeastOnce).await;
    let p = alice.recv_publish_acked().await;
    assert_eq!(
        &*p.topic, "secret/open",
        "the denied topic must not be delivered first"
    );

    // Bob may not write to bob/ (no rule): PUBACK 0x87 and nobody gets it.
    let ack = bob.publish("public-not/x", "x", QoS::AtLeastOnce).await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::NOT_AUTHORIZED));

    // Patterns with %u: each user has own/<username>/#.
    alice.subscribe("own/alice/#", QoS::AtLeastOnce).await;
    let ack = alice.publish("own/alice/x", "mine", QoS::AtLeastOnce).await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::SUCCESS));
    let p = alice.recv_publish_acked().await;
    assert_eq!(&*p.topic, "own/alice/x");
    let ack = bob
        .publish("own/alice/x", "not yours", QoS::AtLeastOnce)
        .await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::NOT_AUTHORIZED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_publish_to_sys_topics() {
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "sys-writer").await;
    c.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let ack = c
        .publish("$SYS/broker/version", "fake", QoS::AtLeastOnce)
        .await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::NOT_AUTHORIZED));
    c.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_rules_and_a_broken_file_keeps_the_old_ones() {
    let dir = TempDir::new("reload");
    let b = secured(&dir).await;
    let broker = b.broker.as_ref().expect("running");
    // Break the ACL file: the reload fails and alice keeps her rights.
    std::fs::write(dir.path("acl"), "topic bogus-access x\n").expect("write");
    broker.reload_security();
    let (mut alice, _) = login(&b, V5, "alice-2", "alice", "wonderland").await;
    let ack = alice.publish("alice/x", "ok", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.map(|a| a.reason_code),
        Some(ReasonCode::NO_MATCHING_SUBSCRIBERS)
    );
    // A new, valid ACL without alice's write rule takes effect at once.
    std::fs::write(dir.path("acl"), "user alice\ntopic read alice/#\n").expect("write");
    broker.reload_security();
    let ack = alice
        .publish("alice/x", "now denied", QoS::AtLeastOnce)
        .await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::NOT_AUTHORIZED));
    // And a new password file: bob's password changes.
    mosquitto_passwd(&dir.path("passwd"), false, "bob", "rebuilt");
    broker.reload_security();
    let (_c, rc) = login(&b, V5, "bob-2", "bob", "builder").await;
    assert_eq!(rc, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_c, rc) = login(&b, V5, "bob-3", "bob", "rebuilt").await;
    assert_eq!(rc, ReasonCode::SUCCESS);
}

// ------------------------------------------------------------------ ACL matrix

/// The matrix's ACL: an anonymous section (the rules before any `user` line), two users, an
/// all-access observer, and patterns for every client. mosquitto.conf(5), `acl_file`.
const MATRIX_ACL: &str = "\
# Anonymous clients: the rules before any `user` line.
topic read public/#
topic deny public/secret
topic write anon/in

user alice
topic readwrite alice/#
topic deny alice/private
topic read shared/+/status
topic write cmd/alice

user bob
topic read shared/#
topic write shared/bob/status

user admin
topic readwrite #

# Every client; %c is the client id, %u the username.
pattern readwrite devices/%c/#
pattern read inbox/%u
pattern deny devices/%c/locked
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No username, on a listener with `allow_anonymous true`; client id `anon-dev`.
    Anonymous,
    /// Client id `dev-a`.
    Alice,
    /// Client id `dev-b`.
    Bob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// SUBSCRIBE to the filter: SUBACK 0x01 (granted) or 0x87.
    Subscribe,
    /// PUBLISH QoS 1 to the topic: PUBACK 0x00 and delivered to the observer, or PUBACK 0x87
    /// and delivered to nobody.
    Publish,
    /// The observer publishes to the topic; the client, subscribed to `#`, gets it or not.
    Receive,
}

use Op::{Publish as Pub, Receive as Recv, Subscribe as Sub};
use Who::{Alice, Anonymous as Anon, Bob};

/// (who, operation, topic or filter, allowed, the rule that decides).
const MATRIX: &[(Who, Op, &str, bool, &str)] = &[
    (
        Anon,
        Sub,
        "public/#",
        true,
        "anonymous section: read public/#",
    ),
    (
        Anon,
        Sub,
        "+/news",
        true,
        "a `+` filter overlapping a read rule",
    ),
    (
        Anon,
        Sub,
        "public/secret",
        false,
        "deny covers the whole filter",
    ),
    (
        Anon,
        Sub,
        "alice/#",
        false,
        "user sections do not apply to anonymous clients",
    ),
    (
        Anon,
        Sub,
        "inbox/+",
        false,
        "%u never matches a client without a username",
    ),
    (
        Anon,
        Pub,
        "anon/in",
        true,
        "anonymous section: write anon/in",
    ),
    (Anon, Pub, "public/news", false, "read-only rule"),
    (
        Anon,
        Pub,
        "devices/anon-dev/temp",
        true,
        "pattern %c applies to anonymous clients",
    ),
    (Anon, Pub, "devices/anon-dev/locked", false, "deny pattern"),
    (Anon, Recv, "public/news", true, "read public/#"),
    (
        Anon,
        Recv,
        "public",
        true,
        "`public/#` matches its parent level",
    ),
    (Anon, Recv, "public/secret", false, "deny line"),
    (Anon, Recv, "alice/notes", false, "no rule"),
    (Anon, Recv, "devices/anon-dev/temp", true, "pattern %c"),
    (Alice, Sub, "alice/#", true, "readwrite alice/#"),
    (Alice, Sub, "alice/private", false, "deny covers the filter"),
    (Alice, Sub, "shared/+/status", true, "read shared/+/status"),
    (
        Alice,
        Sub,
        "shared/a/data",
        false,
        "`+` rule does not match data",
    ),
    (Alice, Sub, "cmd/alice", false, "write-only rule"),
    (
        Alice,
        Sub,
        "public/#",
        false,
        "anonymous rules do not apply to users",
    ),
    (Alice, Sub, "inbox/alice", true, "pattern read inbox/%u"),
    (Alice, Sub, "inbox/bob", false, "%u is alice"),
    (Alice, Sub, "#", true, "`#` overlaps alice's read rules"),
    (Alice, Pub, "alice/notes", true, "readwrite alice/#"),
    (Alice, Pub, "alice/private", false, "deny line"),
    (Alice, Pub, "cmd/alice", true, "write cmd/alice"),
    (Alice, Pub, "shared/a/status", false, "read-only rule"),
    (
        Alice,
        Pub,
        "public/news",
        false,
        "anonymous rules do not apply to users",
    ),
    (Alice, Pub, "devices/dev-a/x", true, "pattern %c is dev-a"),
    (
        Alice,
        Pub,
        "devices/dev-b/x",
        false,
        "pattern %c is not dev-b",
    ),
    (Alice, Pub, "devices/dev-a/locked", false, "deny pattern"),
    (Alice, Recv, "alice/notes", true, "readwrite alice/#"),
    (Alice, Recv, "alice/private", false, "deny line"),
    (Alice, Recv, "shared/a/status", true, "read shared/+/status"),
    (
        Alice,
        Recv,
        "shared/a/data",
        false,
        "`+` rule does not match data",
    ),
    (Alice, Recv, "cmd/alice", false, "write-only rule"),
    (Alice, Recv, "inbox/alice", true, "pattern read inbox/%u"),
    (Alice, Recv, "inbox/bob", false, "%u is alice"),
    (Alice, Recv, "devices/dev-a/x", true, "pattern %c"),
    (
        Alice,
        Recv,
        "devices/dev-b/x",
        false,
        "pattern %c is not dev-b",
    ),
    (
        Alice,
        Recv,
        "public/news",
        false,
        "anonymous rules do not apply to users",
    ),
    (Bob, Sub, "shared/#", true, "read shared/#"),
    (
        Bob,
        Sub,
        "alice/#",
        false,
        "alice's section does not apply to bob",
    ),
    (Bob, Sub, "inbox/bob", true, "pattern read inbox/%u"),
    (
        Bob,
        Pub,
        "shared/bob/status",
        true,
        "write shared/bob/status",
    ),
    (Bob, Pub, "shared/a/status", false, "read-only rule"),
    (Bob, Pub, "alice/notes", false, "no rule"),
    (Bob, Pub, "devices/dev-b/x", true, "pattern %c"),
    (Bob, Recv, "shared/a/data", true, "read shared/#"),
    (Bob, Recv, "shared/bob/status", true, "read shared/#"),
    (Bob, Recv, "inbox/bob", true, "pattern read inbox/%u"),
    (Bob, Recv, "inbox/alice", false, "%u is bob"),
    (Bob, Recv, "alice/notes", false, "no rule"),
    (
        Bob,
        Recv,
        "devices/dev-a/x",
        false,
        "pattern %c is not dev-a",
    ),
];

/// A password file written by `mosquitto_passwd` with the given users.
fn password_file(dir: &TempDir, users: &[(&str, &str)]) -> std::path::PathBuf {
    let pw = dir.path("passwd");
    for (i, (user, password)) in users.iter().enumerate() {
        mosquitto_passwd(&pw, i == 0, user, password);
    }
    pw
}

/// A broker with `acl` and alice/a, bob/b, admin/x; anonymous clients allowed.
async fn broker_with_acl(dir: &TempDir, acl: &str) -> TestBroker {
    let pw = password_file(dir, &[("alice", "a"), ("bob", "b"), ("admin", "x")]);
    let acl_path = dir.path("acl");
    std::fs::write(&acl_path, acl).expect("acl written");
    TestBroker::start_with(|c| {
        c.password_file = Some(pw);
        c.acl_file = Some(acl_path);
        c.auth_failures_before_delay = 0;
    })
    .await
}

async fn connect_as(b: &TestBroker, v: ProtocolVersion, who: Who) -> TestClient {
    let (id, user) = match who {
        Who::Anonymous => ("anon-dev", None),
        Who::Alice => ("dev-a", Some(("alice", "a"))),
        Who::Bob => ("dev-b", Some(("bob", "b"))),
    };
    let (c, ack) = TestClient::connect(b.addr, v, |c| {
        c.client_id = ByteStr::from(id);
        if let Some((u, p)) = user {
            c.username = Some(ByteStr::from(u));
            c.password = Some(bytes::Bytes::copy_from_slice(p.as_bytes()));
        }
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{who:?} connects");
    c
}

/// The observer: user admin (`readwrite #`), subscribed to `#` with No Local so it sees
/// everything the others publish but not its own messages.
async fn observer(b: &TestBroker) -> TestClient {
    let (mut c, rc) = login(b, V5, "observer", "admin", "x").await;
    assert_eq!(rc, ReasonCode::SUCCESS);
    let mut o = common::opts(QoS::AtLeastOnce);
    o.no_local = true;
    let ack = c.subscribe_with(&[("#", o)], Default::default()).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
    c
}

/// Topics of what `c` had queued, each acknowledged.
async fn drained_topics(c: &mut TestClient) -> Vec<String> {
    let mut topics = Vec::new();
    for p in c.drain_publishes().await {
        c.ack(&p).await;
        topics.push(p.topic.to_string());
    }
    topics
}

/// Every row of [`MATRIX`] checked through the broker: SUBACK codes, PUBACK codes and
/// whether a message is delivered (5.0 reason codes 0x87 for refusals, 5.0 sections 3.9.3
/// and 3.4.2.1). All mismatches are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_decides_subscribe_publish_and_receive_through_the_broker() {
    let dir = TempDir::new("matrix");
    let b = broker_with_acl(&dir, MATRIX_ACL).await;
    let mut obs = observer(&b).await;
    let mut wrong = Vec::new();
    for who in [Anon, Alice, Bob] {
        let mut c = connect_as(&b, V5, who).await;
        let rows = |op: Op| {
            MATRIX
                .iter()
                .filter(move |r| r.0 == who && r.1 == op)
                .map(|r| (r.2, r.3, r.4))
        };
        for (filter, allowed, why) in rows(Sub) {
            let ack = c
                .subscribe_with(
                    &[(filter, common::opts(QoS::AtLeastOnce))],
                    Default::default(),
                )
                .await;
            let got = ack.reason_codes.first().copied();
            let want = if allowed {
                ReasonCode::GRANTED_QOS_1
            } else {
                ReasonCode::NOT_AUTHORIZED
            };
            if got != Some(want) {
                wrong.push(format!(
                    "{who:?} subscribe {filter} ({why}): SUBACK {got:?}"
                ));
            }
            if got == Some(ReasonCode::GRANTED_QOS_1) {
                c.unsubscribe(&[filter]).await;
            }
        }
        for (topic, allowed, why) in rows(Pub) {
            let ack = c.publish(topic, "x", QoS::AtLeastOnce).await;
            let got = ack.map(|a| a.reason_code);
            let want = if allowed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NOT_AUTHORIZED
            };
            if got != Some(want) {
                wrong.push(format!("{who:?} publish {topic} ({why}): PUBACK {got:?}"));
            }
            let delivered = drained_topics(&mut obs).await;
            let expected: Vec<String> = if allowed {
                vec![topic.to_owned()]
            } else {
                vec![]
            };
            if delivered != expected {
                wrong.push(format!(
                    "{who:?} publish {topic} ({why}): the observer got {delivered:?}"
                ));
            }
        }
        // Delivery is checked message by message, whatever the subscription's filter.
        c.subscribe("#", QoS::AtLeastOnce).await;
        for (topic, allowed, why) in rows(Recv) {
            obs.publish(topic, "from the observer", QoS::AtLeastOnce)
                .await;
            let got = drained_topics(&mut c).await;
            let expected: Vec<String> = if allowed {
                vec![topic.to_owned()]
            } else {
                vec![]
            };
            if got != expected {
                wrong.push(format!("{who:?} receive {topic} ({why}): got {got:?}"));
            }
        }
        c.disconnect().await;
    }
    assert!(
        wrong.is_empty(),
        "ACL matrix mismatches:\n{}",
        wrong.join("\n")
    );
}

// ------------------------------------------------------- retained and the ACL

const RETAINED_ACL: &str = "\
user admin
topic readwrite #
user alice
topic read news/#
topic deny news/secret
";

/// A retained message is a delivery like any other: one on a topic the subscriber may not
/// read stays withheld when a wildcard subscription covers it, while the readable ones
/// arrive with RETAIN set [MQTT-3.3.1-8]. The subscription itself is granted: some topics
/// under it are readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_the_acl_denies_are_withheld_from_wildcard_subscribers() {
    let dir = TempDir::new("retained-acl");
    let b = broker_with_acl(&dir, RETAINED_ACL).await;
    let (mut admin, rc) = login(&b, V5, "admin", "admin", "x").await;
    assert_eq!(rc, ReasonCode::SUCCESS);
    for topic in ["news/public", "news/secret", "news/sports/today", "other/x"] {
        admin
            .publish_retained(topic, "retained", QoS::AtLeastOnce)
            .await;
    }
    for v in [V311, V5] {
        let (mut alice, rc) = login(&b, v, &format!("alice-{v:?}"), "alice", "a").await;
        assert_eq!(rc, ReasonCode::SUCCESS);
        for (filter, expected) in [
            ("news/#", vec!["news/public", "news/sports/today"]),
            ("+/secret", vec![]),
            ("#", vec!["news/public", "news/sports/today"]),
        ] {
            let ack = alice
                .subscribe_with(
                    &[(filter, common::opts(QoS::AtLeastOnce))],
                    Default::default(),
                )
                .await;
            assert_eq!(
                ack.reason_codes,
                vec![ReasonCode::GRANTED_QOS_1],
                "{v:?} SUBACK for {filter}"
            );
            let mut got = Vec::new();
            for p in alice.drain_publishes().await {
                alice.ack(&p).await;
                assert!(p.retain, "{v:?} {filter}: RETAIN set on {}", p.topic);
                got.push(p.topic.to_string());
            }
            got.sort();
            assert_eq!(got, expected, "{v:?}: retained messages for {filter}");
            alice.unsubscribe(&[filter]).await;
        }
        alice.disconnect().await;
    }
}

// -------------------------------------------------------------- denied publish

const PUBLISH_ACL: &str = "\
user alice
topic write open/#
user bob
topic read guarded/#
topic read open/#
";

/// MQTT 3.1.1 cannot tell a client its PUBLISH was refused, so the broker acknowledges it
/// as usual and drops it, as Mosquitto does: "If a Server implementation does not authorize
/// a PUBLISH to be performed by a Client; it has no way of informing that Client. It MUST
/// either make a positive acknowledgement, according to the normal QoS rules, or close the
/// Network Connection [MQTT-3.3.5-2]". The connection stays open, and a QoS 2 packet
/// identifier used for a refused message is free again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_publish_in_3_1_1_is_acknowledged_normally_and_dropped() {
    // QoS 2: PUBREC, then PUBREL -> PUBCOMP, the normal flow [MQTT-4.3.3-1].
    denied_publish_is_answered_with_and_dropped("deny-311", V311, ReasonCode::SUCCESS).await;
}

/// MQTT 5.0 can say no: PUBACK or PUBREC with 0x87 Not authorized (5.0 sections 3.4.2.1 and
/// 3.5.2.1). A PUBREC of 0x80 or more ends the QoS 2 exchange: the sender sends PUBREL only
/// for a PUBREC below 0x80 [MQTT-4.3.3-4], and the packet identifier is free again at once
/// (section 2.2.1). QoS 0 is dropped silently. The connection stays open throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_publish_in_5_0_gets_0x87_and_is_dropped() {
    denied_publish_is_answered_with_and_dropped("deny-5", V5, ReasonCode::NOT_AUTHORIZED).await;
}

/// The denied-publish scenario of both versions: alice publishes to `guarded/`, which she
/// may not write, at QoS 0 (no answer), QoS 1 (PUBACK `refused`) and QoS 2 with packet
/// identifier 42 (the last answer, PUBCOMP in 3.1.1 or PUBREC in 5.0, carries `refused`);
/// bob, subscribed, receives none of it. Then the same packet identifier on an allowed
/// topic is acknowledged with success and delivered once, on the same connection.
async fn denied_publish_is_answered_with_and_dropped(
    dir: &str,
    v: ProtocolVersion,
    refused: ReasonCode,
) {
    let dir = TempDir::new(dir);
    let b = broker_with_acl(&dir, PUBLISH_ACL).await;
    let (mut bob, _) = login(&b, v, "bob", "bob", "b").await;
    bob.subscribe("guarded/#", QoS::ExactlyOnce).await;
    bob.subscribe("open/#", QoS::ExactlyOnce).await;
    let (mut alice, rc) = login(&b, v, "alice", "alice", "a").await;
    assert_eq!(rc, ReasonCode::SUCCESS);

    assert_eq!(
        alice.publish("guarded/q0", "x", QoS::AtMostOnce).await,
        None
    );
    let ack = alice.publish("guarded/q1", "x", QoS::AtLeastOnce).await;
    assert_eq!(ack.map(|a| a.reason_code), Some(refused), "{v:?} PUBACK");
    let mut p = common::publish_packet("guarded/q2", "x", QoS::ExactlyOnce);
    p.packet_id = 42;
    let ack = alice.publish_packet(p).await;
    assert!(
        matches!(ack, Some(ref a) if a.packet_id == 42 && a.reason_code == refused),
        "{v:?} last answer {refused:?} for the refused QoS 2 message: {ack:?}"
    );
    alice.ping().await;
    assert!(
        bob.drain_publishes().await.is_empty(),
        "a refused message was delivered"
    );

    // Same connection, same packet identifier, an allowed topic: delivered once.
    let mut p = common::publish_packet("open/q2", "allowed", QoS::ExactlyOnce);
    p.packet_id = 42;
    let ack = alice.publish_packet(p).await;
    assert_eq!(ack.map(|a| a.reason_code), Some(ReasonCode::SUCCESS));
    let got = bob.drain_publishes().await;
    let topics: Vec<&str> = got.iter().map(|p| &*p.topic).collect();
    assert_eq!(topics, vec!["open/q2"]);
}

// --------------------------------------------------------- denied subscription

/// Each filter of a SUBSCRIBE gets its own code, in order [MQTT-3.9.3-1]: a refused one is
/// 0x80 Failure in 3.1.1 (section 3.9.3) and 0x87 Not authorized in 5.0 (section 3.9.3);
/// the others are granted and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_subscription_gets_0x80_in_3_1_1_and_0x87_in_5_0() {
    let dir = TempDir::new("deny-sub");
    let b = broker_with_acl(&dir, PUBLISH_ACL).await;
    for (v, refused) in [
        (V311, ReasonCode::UNSPECIFIED_ERROR),
        (V5, ReasonCode::NOT_AUTHORIZED),
    ] {
        let (mut bob, rc) = login(&b, v, &format!("bob-{v:?}"), "bob", "b").await;
        assert_eq!(rc, ReasonCode::SUCCESS);
        let ack = bob
            .subscribe_with(
                &[
                    ("guarded/#", common::opts(QoS::AtLeastOnce)),
                    ("secret/#", common::opts(QoS::AtLeastOnce)),
                    ("open/+", common::opts(QoS::AtMostOnce)),
                ],
                Default::default(),
            )
            .await;
        assert_eq!(
            ack.reason_codes,
            vec![
                ReasonCode::GRANTED_QOS_1,
                refused,
                ReasonCode::GRANTED_QOS_0
            ],
            "{v:?}"
        );
        bob.ping().await;
    }
}

// ----------------------------------------------------------------- credentials

/// Two listeners of one broker: anonymous clients are allowed on the first only
/// (per-listener `allow_anonymous`, as Mosquitto's `per_listener_settings true`). Users with
/// a password get in on both; a wrong password is refused on both, even where anonymous
/// access is allowed (it is not downgraded to anonymous). Refusals: 3.1.1 return code 5
/// (not authorised, as Mosquitto), 5.0 0x87 for anonymous and 0x86 for a bad password; the
/// connection is then closed [MQTT-3.2.2-5] (5.0: [MQTT-3.2.2-7]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_is_per_listener_and_bad_passwords_are_refused_on_each() {
    let dir = TempDir::new("listeners");
    let pw = password_file(&dir, &[("alice", "wonderland")]);
    let b = TestBroker::start_with(|c| {
        c.password_file = Some(pw);
        c.auth_failures_before_delay = 0;
        let mut closed =
            midge_broker::ListenerConfig::tcp("127.0.0.1:0".parse().expect("address"), false);
        closed.max_connections = None;
        c.listeners.push(closed);
    })
    .await;
    let addrs = b.broker.as_ref().expect("running").local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let (open, closed) = (addrs[0], addrs[1]);

    for v in [V311, V5] {
        let tag = format!("{v:?}");
        let anonymous = |addr| async move {
            TestClient::connect(addr, v, |c| c.client_id = ByteStr::from("anon")).await
        };
        let user = |addr, pass: &'static str| async move {
            TestClient::connect(addr, v, |c| {
                c.client_id = ByteStr::from("alice");
                c.username = Some(ByteStr::from("alice"));
                c.password = Some(bytes::Bytes::from_static(pass.as_bytes()));
            })
            .await
        };

        let (c, ack) = anonymous(open).await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::SUCCESS,
            "{tag}: anonymous, open"
        );
        c.disconnect().await;
        let (mut c, ack) = anonymous(closed).await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::NOT_AUTHORIZED,
            "{tag}: anonymous"
        );
        if !v.is_v5() {
            assert_eq!(ack.reason_code.to_v3_connack(), 5, "{tag}: return code 5");
        }
        c.expect_closed().await;

        for addr in [open, closed] {
            let (c, ack) = user(addr, "wonderland").await;
            assert_eq!(
                ack.reason_code,
                ReasonCode::SUCCESS,
                "{tag}: alice on {addr}"
            );
            c.disconnect().await;
            let (mut c, ack) = user(addr, "looking-glass").await;
            if v.is_v5() {
                assert_eq!(
                    ack.reason_code,
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                    "{tag}: wrong password on {addr}"
                );
            } else {
                assert_eq!(
                    ack.reason_code.to_v3_connack(),
                    5,
                    "{tag}: wrong password on {addr}"
                );
            }
            c.expect_closed().await;
        }
    }
}

/// Listeners with their own password and ACL files (Mosquitto's `per_listener_settings
/// true` with `password_file`/`acl_file` in each listener section): a user of one
/// listener's file cannot log in on the other; each listener's ACL decides what its clients
/// may publish, subscribe to and receive, and a session that reconnects through the other
/// listener gets that listener's rules; SIGHUP-style reload reloads each listener's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_with_their_own_password_and_acl_files() {
    let dir = TempDir::new("per-listener");
    let pw_a = password_file(&dir, &[("alice", "wonderland")]);
    let pw_b = dir.path("passwd-b");
    mosquitto_passwd(&pw_b, true, "bob", "builder");
    mosquitto_passwd(&pw_b, false, "alice", "wonderland");
    let acl_a = dir.path("acl-a");
    std::fs::write(&acl_a, "user alice\ntopic readwrite a/#\n").expect("acl a");
    let acl_b = dir.path("acl-b");
    std::fs::write(
        &acl_b,
        "user alice\ntopic read b/#\nuser bob\ntopic write b/#\n",
    )
    .expect("acl b");
    let files = |password_file, acl_file| {
        Some(midge_broker::ListenerSecurity {
            password_file: Some(password_file),
            acl_file: Some(acl_file),
        })
    };
    let b = TestBroker::start_with(|c| {
        c.auth_failures_before_delay = 0;
        c.listeners[0].allow_anonymous = false;
        c.listeners[0].security = files(pw_a.clone(), acl_a.clone());
        let mut second =
            midge_broker::ListenerConfig::tcp("127.0.0.1:0".parse().expect("address"), false);
        second.security = files(pw_b.clone(), acl_b.clone());
        c.listeners.push(second);
    })
    .await;
    let addrs = b.broker.as_ref().expect("running").local_addrs().to_vec();
    let (la, lb) = (addrs[0], addrs[1]);
    let connect = |addr, id: &'static str, user: &'static str, pass: &'static str| async move {
        TestClient::connect(addr, V5, |c| {
            c.client_id = ByteStr::from(id);
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(300);
            c.username = Some(ByteStr::from(user));
            c.password = Some(bytes::Bytes::from_static(pass.as_bytes()));
        })
        .await
    };

    // bob is only in listener B's password file.
    let (_, ack) = connect(la, "bob-a", "bob", "builder").await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (mut bob, ack) = connect(lb, "bob-b", "bob", "builder").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    // On A, alice has a/# and nothing of b/#.
    let (mut alice, ack) = connect(la, "alice", "alice", "wonderland").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        alice
            .publish("b/x", "no", QoS::AtLeastOnce)
            .await
            .map(|r| r.reason_code),
        Some(ReasonCode::NOT_AUTHORIZED)
    );
    let sub = alice
        .subscribe_with(
            &[
                ("a/#", common::opts(QoS::AtLeastOnce)),
                ("b/#", common::opts(QoS::AtLeastOnce)),
            ],
            midge_proto::Properties::default(),
        )
        .await;
    assert_eq!(
        sub.reason_codes,
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED]
    );
    alice.disconnect().await;

    // Back through B: B's ACL lets her read b/# (and not a/#); her session's read access
    // follows the listener.
    let (mut alice, ack) = connect(lb, "alice", "alice", "wonderland").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(ack.session_present);
    let sub = alice
        .subscribe_with(
            &[("b/#", common::opts(QoS::AtLeastOnce))],
            midge_proto::Properties::default(),
        )
        .await;
    assert_eq!(sub.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
    assert_eq!(
        bob.publish("b/news", "for alice", QoS::AtLeastOnce)
            .await
            .map(|r| r.reason_code),
        Some(ReasonCode::SUCCESS)
    );
    assert_eq!(common::text(&alice.recv_publish_acked().await), "for alice");
    // The a/# subscription made through A stays, but B's rules do not let her read it.
    let (mut writer, ack) = connect(la, "alice-w", "alice", "wonderland").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    writer
        .publish("a/secret", "not via B", QoS::AtLeastOnce)
        .await;
    alice.ping().await;
    alice.assert_no_publish().await;

    // Reload reads each listener's own files again.
    mosquitto_passwd(&pw_a, false, "carol", "secret");
    b.broker.as_ref().expect("running").reload_security();
    let (_, ack) = connect(la, "carol", "carol", "secret").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}
