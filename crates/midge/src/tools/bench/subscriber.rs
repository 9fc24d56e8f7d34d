//! The subscriber role: count messages, acknowledge them (PUBACK, or PUBREC then PUBCOMP),
//! read the publisher's stamp for end-to-end latency and per-publisher order.
//!
//! Also the idle role of `midge bench conn`, which only answers the broker.

use super::connection::Role;
use super::publisher::STAMP_LEN;
use super::stats::{unix_nanos, Stats};
use bytes::BytesMut;
use midge_proto::{encode, Packet, ProtocolVersion, PubResp, QoS};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::time::Instant;

/// Publisher indexes above this are not checked for order (the table would be too big).
const MAX_TRACKED_PUBLISHERS: usize = 1 << 20;
/// Latencies kept locally before they go to the shared histogram.
const LATENCY_BATCH: usize = 512;

pub struct Subscriber {
    version: ProtocolVersion,
    stats: Arc<Stats>,
    /// Clock read once per socket read: all packets of one read arrived together.
    now_ns: u64,
    received: u64,
    duplicates: u64,
    gaps: u64,
    /// Last sequence number seen per publisher index.
    last_seq: Vec<u32>,
    latencies: Vec<u64>,
}

impl Subscriber {
    pub fn new(version: ProtocolVersion, stats: Arc<Stats>) -> Subscriber {
        Subscriber {
            version,
            stats,
            now_ns: 0,
            received: 0,
            duplicates: 0,
            gaps: 0,
            last_seq: Vec::new(),
            latencies: Vec::new(),
        }
    }

    fn on_stamp(&mut self, payload: &[u8]) {
        let (Ok(ts), Ok(index), Ok(seq)) = (
            payload[0..8].try_into().map(u64::from_be_bytes),
            payload[8..12].try_into().map(u32::from_be_bytes),
            payload[12..16].try_into().map(u32::from_be_bytes),
        ) else {
            return;
        };
        self.latencies.push(self.now_ns.saturating_sub(ts));
        if self.latencies.len() >= LATENCY_BATCH {
            self.flush_latencies();
        }
        let index = index as usize;
        if index >= MAX_TRACKED_PUBLISHERS {
            return;
        }
        if self.last_seq.len() <= index {
            self.last_seq.resize(index + 1, 0);
        }
        let last = self.last_seq[index];
        if seq <= last {
            self.duplicates += 1;
        } else {
            self.gaps += u64::from(seq - last - 1);
            self.last_seq[index] = seq;
        }
    }

    fn flush_latencies(&mut self) {
        if !self.latencies.is_empty() {
            self.stats.record_latencies(&self.latencies);
            self.latencies.clear();
        }
    }

    /// Hands everything counted locally to the shared statistics.
    pub fn flush(&mut self) {
        if self.received > 0 {
            self.stats.note_received(self.received);
            self.received = 0;
        }
        if self.duplicates > 0 {
            self.stats.duplicates.fetch_add(self.duplicates, Relaxed);
            self.duplicates = 0;
        }
        if self.gaps > 0 {
            self.stats.gaps.fetch_add(self.gaps, Relaxed);
            self.gaps = 0;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.flush();
        self.flush_latencies();
    }
}

impl Role for Subscriber {
    fn fill(&mut self, _out: &mut BytesMut, _now: Instant) -> Option<Instant> {
        None
    }

    fn on_packet(&mut self, packet: Packet, out: &mut BytesMut) -> anyhow::Result<()> {
        match packet {
            Packet::Publish(p) => {
                self.received += 1;
                if p.payload.len() >= STAMP_LEN {
                    self.on_stamp(&p.payload[..STAMP_LEN]);
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => encode(
                        &Packet::PubAck(PubResp::new(p.packet_id)),
                        self.version,
                        out,
                    ),
                    QoS::ExactlyOnce => encode(
                        &Packet::PubRec(PubResp::new(p.packet_id)),
                        self.version,
                        out,
                    ),
                }
                Ok(())
            }
            Packet::PubRel(r) => {
                encode(
                    &Packet::PubComp(PubResp::new(r.packet_id)),
                    self.version,
                    out,
                );
                Ok(())
            }
            p => anyhow::bail!("unexpected {:?} on a subscriber", p.packet_type()),
        }
    }

    fn before_packets(&mut self) {
        self.now_ns = unix_nanos();
    }

    fn after_packets(&mut self) {
        self.flush();
    }

    fn finished(&self) -> bool {
        false
    }
}

/// A connection that only holds its place (and answers keep-alive).
pub struct Idle;

impl Role for Idle {
    fn fill(&mut self, _out: &mut BytesMut, _now: Instant) -> Option<Instant> {
        None
    }

    fn on_packet(&mut self, packet: Packet, _out: &mut BytesMut) -> anyhow::Result<()> {
        anyhow::bail!(
            "unexpected {:?} on an idle connection",
            packet.packet_type()
        )
    }

    fn finished(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(index: u32, seq: u32) -> Vec<u8> {
        let mut p = unix_nanos().to_be_bytes().to_vec();
        p.extend_from_slice(&index.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn counts_gaps_and_duplicates_per_publisher() {
        let stats = Arc::new(Stats::new());
        let mut sub = Subscriber::new(ProtocolVersion::V311, stats.clone());
        for (index, seq) in [(0, 1), (0, 2), (1, 1), (0, 5), (0, 5), (1, 2), (0, 4)] {
            sub.on_stamp(&stamp(index, seq));
        }
        drop(sub);
        assert_eq!(stats.gaps.load(Relaxed), 2);
        assert_eq!(stats.duplicates.load(Relaxed), 2);
        assert_eq!(stats.latency_summary().map(|l| l.count), Some(7));
    }
}
