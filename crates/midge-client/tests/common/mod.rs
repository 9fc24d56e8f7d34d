//! The server's end of one connection in the client's tests: raw MQTT 5 packets over any
//! byte stream (a TCP socket, an in-memory duplex), so that a test scripts exactly what the
//! client sees.

#![allow(dead_code)]

use bytes::BytesMut;
use midge_proto::{decode, encode, Packet, ProtocolVersion};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// One connection, seen from the server.
pub struct Peer<S> {
    stream: S,
    buf: BytesMut,
    /// How long `recv` waits for a packet before failing the test.
    wait: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn new(stream: S, wait: Duration) -> Self {
        Peer {
            stream,
            buf: BytesMut::new(),
            wait,
        }
    }

    /// The next packet; fails the test after `wait` or at the end of the stream.
    pub async fn recv(&mut self) -> Packet {
        tokio::time::timeout(self.wait, self.try_recv())
            .await
            .expect("a packet in time")
            .expect("a packet, not end of stream")
    }

    /// The next packet, or `None` at the end of the stream.
    pub async fn try_recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, V5, usize::MAX).expect("decodes") {
                return Some(p);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Reads the client's CONNECT.
    pub async fn recv_connect(&mut self) -> midge_proto::Connect {
        match self.recv().await {
            Packet::Connect(connect) => *connect,
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }
}
