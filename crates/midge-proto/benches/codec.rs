//! Codec throughput: decode and encode streams of packets, reported by criterion as bytes
//! per second (MB/s of wire data).
//!
//! Streams are what a broker sees: 1,000 PUBLISH packets of one size back to back (QoS 0
//! and 1, MQTT 3.1.1 and 5.0), and 1,000 PUBACKs. Decoding splits each packet off one
//! `BytesMut` as the broker's read loop does; encoding appends into one reused buffer.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge_proto::{decode, encode, Packet, ProtocolVersion, PubResp, Publish, QoS};
use std::hint::black_box;

const PACKETS: usize = 1000;

fn publishes(size: usize, qos: QoS) -> Vec<Packet> {
    (0..PACKETS)
        .map(|i| {
            Packet::Publish(Publish {
                qos,
                topic: format!("tenant{}/device{}/sensor", i % 10, i % 100).into(),
                packet_id: if qos == QoS::AtMostOnce {
                    0
                } else {
                    (i % 65_535 + 1) as u16
                },
                payload: Bytes::from(vec![0x5a; size]),
                ..Publish::default()
            })
        })
        .collect()
}

fn pubacks() -> Vec<Packet> {
    (0..PACKETS)
        .map(|i| Packet::PubAck(PubResp::new((i + 1) as u16)))
        .collect()
}

fn wire(packets: &[Packet], version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    for p in packets {
        encode(p, version, &mut buf);
    }
    buf
}

fn cases() -> Vec<(String, ProtocolVersion, Vec<Packet>)> {
    let mut out = Vec::new();
    for (vname, version) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        for size in [16, 256, 4096] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let name = format!("{vname}/publish_q{}_{size}B", qos.as_u8());
                out.push((name, version, publishes(size, qos)));
            }
        }
        out.push((format!("{vname}/puback"), version, pubacks()));
    }
    out
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, version, packets) in cases() {
        let bytes = wire(&packets, version).freeze();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&bytes[..]);
                let mut n = 0;
                while let Ok(Some(p)) = decode(&mut buf, version, 1 << 20) {
                    black_box(&p);
                    n += 1;
                }
                assert_eq!(n, PACKETS);
            })
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, version, packets) in cases() {
        let len = wire(&packets, version).len();
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = BytesMut::with_capacity(len);
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                buf.clear();
                for p in &packets {
                    encode(black_box(p), version, &mut buf);
                }
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
