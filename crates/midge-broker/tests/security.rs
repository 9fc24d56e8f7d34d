//! The password and ACL files wired into the broker: CONNACK codes for credentials,
//! publish / subscribe / delivery decisions, `$SYS` protection and reload.
//!
//! Password files are written by Debian's real `mosquitto_passwd` (installed by `.ci/run`;
//! the tests fail, never skip, without it).

mod common;

use common::{TestBroker, TestClient};
use midge_proto::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};
use std::path::{Path, PathBuf};
use std::process::Command;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("midge-security-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
async fn secured(dir: &Dir) -> TestBroker {
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
    let dir = Dir::new("login");
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
    let dir = Dir::new("acl");
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
    let dir = Dir::new("reload");
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
