//! The publisher role: PUBLISH at a rate or as fast as the socket and the in-flight window
//! allow, and the QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL, PUBCOMP) flows.
//!
//! A PUBLISH is not encoded field by field per message: the packet is encoded once by
//! `midge_proto` into a template, and each message copies the template and patches its
//! packet identifier and the payload's stamp (send time, publisher index, sequence number).

use super::connection::{Role, WRITE_HIGH};
use super::stats::{unix_nanos, Stats};
use bytes::{Bytes, BytesMut};
use midge_proto::{decode_fixed_header, encode, Packet, ProtocolVersion, PubResp, Publish, QoS};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use tokio::time::{Duration, Instant};

/// Bytes of the stamp at the start of each payload: send time in Unix nanoseconds (u64),
/// publisher index (u32), sequence number from 1 (u32), all big-endian. Shorter payloads
/// carry no stamp (no latency, no loss check).
pub const STAMP_LEN: usize = 16;

/// A PUBLISH packet encoded once, copied per message.
pub struct PublishTemplate {
    bytes: Vec<u8>,
    packet_id_at: Option<usize>,
    payload_at: usize,
}

impl PublishTemplate {
    pub fn new(topic: &str, qos: QoS, size: usize, version: ProtocolVersion) -> PublishTemplate {
        let publish = Publish {
            qos,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
            payload: Bytes::from(vec![b'm'; size]),
            ..Publish::default()
        };
        let mut buf = BytesMut::new();
        encode(&Packet::Publish(publish), version, &mut buf);
        let header_len = match decode_fixed_header(&buf) {
            Ok(Some(h)) => h.header_len,
            _ => unreachable!("midge_proto encodes a valid fixed header"),
        };
        // Fixed header, then the topic (u16 length + bytes), then the packet identifier.
        let packet_id_at = (qos != QoS::AtMostOnce).then_some(header_len + 2 + topic.len());
        PublishTemplate {
            payload_at: buf.len() - size,
            packet_id_at,
            bytes: buf.to_vec(),
        }
    }

    /// Appends one PUBLISH to `out`.
    pub fn write(&self, out: &mut BytesMut, packet_id: u16, stamp: (u64, u32, u32)) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let packet = &mut out[start..];
        if let Some(at) = self.packet_id_at {
            packet[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        let payload = &mut packet[self.payload_at..];
        if payload.len() >= STAMP_LEN {
            payload[0..8].copy_from_slice(&stamp.0.to_be_bytes());
            payload[8..12].copy_from_slice(&stamp.1.to_be_bytes());
            payload[12..16].copy_from_slice(&stamp.2.to_be_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Packet identifiers in use, and for QoS 2 whether PUBREL was sent.
struct IdPool {
    in_use: Box<[u64; 1024]>,
    released: Box<[u64; 1024]>,
    next: u16,
}

impl IdPool {
    fn new() -> IdPool {
        IdPool {
            in_use: Box::new([0; 1024]),
            released: Box::new([0; 1024]),
            next: 0,
        }
    }

    fn bit(id: u16) -> (usize, u64) {
        (usize::from(id / 64), 1 << (id % 64))
    }

    /// A free identifier; the caller keeps fewer than 65,535 in flight.
    fn take(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next == 0 {
                continue;
            }
            let (w, b) = Self::bit(self.next);
            if self.in_use[w] & b == 0 {
                self.in_use[w] |= b;
                return self.next;
            }
        }
    }

    fn is_in_use(&self, id: u16) -> bool {
        let (w, b) = Self::bit(id);
        self.in_use[w] & b != 0
    }

    fn is_released(&self, id: u16) -> bool {
        let (w, b) = Self::bit(id);
        self.released[w] & b != 0
    }

    fn mark_released(&mut self, id: u16) {
        let (w, b) = Self::bit(id);
        self.released[w] |= b;
    }

    fn free(&mut self, id: u16) {
        let (w, b) = Self::bit(id);
        self.in_use[w] &= !b;
        self.released[w] &= !b;
    }
}

/// When a publisher stops producing.
#[derive(Clone)]
pub struct PublishLimits {
    /// Messages per publisher, if bounded.
    pub count: Option<u64>,
    /// Messages per second per publisher, if bounded.
    pub rate: Option<f64>,
    /// Set when the run's duration is over (or on Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// The largest number of unacknowledged QoS 1/2 messages.
    pub inflight: u16,
}

pub struct Publisher {
    index: u32,
    qos: QoS,
    version: ProtocolVersion,
    template: PublishTemplate,
    limits: PublishLimits,
    window: u16,
    start: Instant,
    ids: Option<IdPool>,
    inflight: u16,
    /// Messages written so far (the stamp's sequence number of the last one).
    pub sent: u64,
    completed: u64,
    rejected: u64,
    stats: Arc<Stats>,
}

impl Publisher {
    pub fn new(
        index: u32,
        template: PublishTemplate,
        qos: QoS,
        version: ProtocolVersion,
        limits: PublishLimits,
        receive_maximum: u16,
        stats: Arc<Stats>,
    ) -> Publisher {
        Publisher {
            index,
            qos,
            version,
            template,
            window: limits.inflight.min(receive_maximum).max(1),
            limits,
            start: Instant::now(),
            ids: (qos != QoS::AtMostOnce).then(IdPool::new),
            inflight: 0,
            sent: 0,
            completed: 0,
            rejected: 0,
            stats,
        }
    }

    /// Takes back the messages in `unwritten` bytes that never reached the socket (the
    /// connection was cut off): they are not sent. Whole PUBLISH packets only; with QoS 2 a
    /// few PUBREL bytes may be among them, which the division absorbs.
    pub fn unsend(&mut self, unwritten: usize) {
        let n = (unwritten / self.template.len()) as u64;
        let n = n.min(self.sent);
        self.sent -= n;
        self.stats.sent.fetch_sub(n, Relaxed);
    }

    /// Starts the rate clock now (publishers connect before the run starts).
    pub fn start_clock(&mut self) {
        self.start = Instant::now();
    }

    fn exhausted(&self) -> bool {
        self.limits.count.is_some_and(|c| self.sent >= c) || self.limits.stop.load(Relaxed)
    }

    fn ack(&mut self, id: u16, qos2_done: bool) -> anyhow::Result<()> {
        let ids = self
            .ids
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("ack on QoS 0"))?;
        if !ids.is_in_use(id) || (qos2_done && !ids.is_released(id)) {
            anyhow::bail!("acknowledgement for packet identifier {id} not in flight");
        }
        ids.free(id);
        self.inflight -= 1;
        self.completed += 1;
        Ok(())
    }

    fn on_pubrec(&mut self, r: PubResp, out: &mut BytesMut) -> anyhow::Result<()> {
        let ids = self
            .ids
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("PUBREC on QoS 0"))?;
        if !ids.is_in_use(r.packet_id) || ids.is_released(r.packet_id) {
            anyhow::bail!(
                "PUBREC for packet identifier {} not awaiting it",
                r.packet_id
            );
        }
        if r.reason_code.0 >= 0x80 {
            // A failed PUBREC ends the flow [MQTT-4.3.3]: no PUBREL.
            self.rejected += 1;
            ids.mark_released(r.packet_id);
            return self.ack(r.packet_id, true);
        }
        ids.mark_released(r.packet_id);
        encode(
            &Packet::PubRel(PubResp::new(r.packet_id)),
            self.version,
            out,
        );
        Ok(())
    }
}

impl Role for Publisher {
    fn fill(&mut self, out: &mut BytesMut, now: Instant) -> Option<Instant> {
        let stamp_time = unix_nanos();
        let first = self.sent;
        let mut wake = None;
        while out.len() + self.template.len() <= WRITE_HIGH.max(self.template.len()) {
            if self.exhausted() || (self.ids.is_some() && self.inflight >= self.window) {
                break;
            }
            if let Some(rate) = self.limits.rate {
                let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate);
                if due > now {
                    wake = Some(due);
                    break;
                }
            }
            let id = match &mut self.ids {
                Some(ids) => {
                    self.inflight += 1;
                    ids.take()
                }
                None => 0,
            };
            self.sent += 1;
            self.template
                .write(out, id, (stamp_time, self.index, self.sent as u32));
        }
        if self.sent > first {
            self.stats.sent.fetch_add(self.sent - first, Relaxed);
        }
        wake
    }

    fn on_packet(&mut self, packet: Packet, out: &mut BytesMut) -> anyhow::Result<()> {
        match (packet, self.qos) {
            (Packet::PubAck(r), QoS::AtLeastOnce) => {
                if r.reason_code.0 >= 0x80 {
                    self.rejected += 1;
                }
                self.ack(r.packet_id, false)
            }
            (Packet::PubRec(r), QoS::ExactlyOnce) => self.on_pubrec(r, out),
            (Packet::PubComp(r), QoS::ExactlyOnce) => self.ack(r.packet_id, true),
            (p, _) => anyhow::bail!("unexpected {:?} on a publisher", p.packet_type()),
        }
    }

    fn after_packets(&mut self) {
        if self.completed > 0 {
            self.stats.completed.fetch_add(self.completed, Relaxed);
            self.completed = 0;
        }
        if self.rejected > 0 {
            self.stats.rejected.fetch_add(self.rejected, Relaxed);
            self.rejected = 0;
        }
    }

    fn finished(&self) -> bool {
        self.exhausted() && self.inflight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_proto::decode;

    #[test]
    fn template_patches_packet_id_and_stamp() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let t = PublishTemplate::new("bench/7", QoS::AtLeastOnce, 32, version);
            let mut buf = BytesMut::new();
            t.write(&mut buf, 0x1234, (99, 7, 3));
            let Some(Packet::Publish(p)) = decode(&mut buf, version, 1 << 20).expect("decodes")
            else {
                panic!("not a PUBLISH");
            };
            assert_eq!(p.packet_id, 0x1234);
            assert_eq!(p.topic, "bench/7");
            assert_eq!(p.payload.len(), 32);
            assert_eq!(&p.payload[0..8], &99u64.to_be_bytes());
            assert_eq!(&p.payload[8..12], &7u32.to_be_bytes());
            assert_eq!(&p.payload[12..16], &3u32.to_be_bytes());
        }
    }

    #[test]
    fn id_pool_skips_identifiers_in_flight() {
        let mut pool = IdPool::new();
        let a = pool.take();
        for _ in 0..65_533 {
            pool.take();
        }
        let last = pool.take();
        assert!(pool.is_in_use(a) && pool.is_in_use(last));
        pool.free(a);
        assert_eq!(pool.take(), a);
    }
}
