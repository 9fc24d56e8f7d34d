//! Tables and key layouts.
//!
//! Keys that belong to a client start with the client ID's length (u16, big endian) and
//! bytes, so a prefix scan for one client never runs into another client whose ID merely
//! starts the same way. Numbers are big endian so that byte order is numeric order: a
//! queue scan reads messages in sequence order.

/// The tables of the store (keyspaces in fjall, tables in redb).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store format marker.
    Meta,
    /// client -> `SessionRecord`
    Sessions,
    /// client + filter -> `SubscriptionRecord`
    Subscriptions,
    /// message id -> `MessageRecord`
    Messages,
    /// client + seq -> `QueueEntry`
    Queue,
    /// client + seq -> `InflightRecord`
    Inflight,
    /// client + packet id -> empty
    InboundQos2,
    /// topic -> `MessageRecord`
    Retained,
    /// client -> `WillRecord`
    Wills,
}

impl Table {
    /// Every table, in declaration order: `ALL[t as usize] == t` (the writer keeps one map
    /// per table, indexed so).
    pub const ALL: [Table; 9] = [
        Table::Meta,
        Table::Sessions,
        Table::Subscriptions,
        Table::Messages,
        Table::Queue,
        Table::Inflight,
        Table::InboundQos2,
        Table::Retained,
        Table::Wills,
    ];

    /// The name on disk (and in error messages).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Sessions => "sessions",
            Table::Subscriptions => "subscriptions",
            Table::Messages => "messages",
            Table::Queue => "queue",
            Table::Inflight => "inflight",
            Table::InboundQos2 => "inbound_qos2",
            Table::Retained => "retained",
            Table::Wills => "wills",
        }
    }
}

/// The key prefix of everything that belongs to `client`.
pub fn client(client: &str) -> Vec<u8> {
    let bytes = client.as_bytes();
    // MQTT limits a client ID to 65535 bytes; a longer one is cut in the prefix only,
    // which keeps keys well formed without a panic path.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(2 + bytes.len() + 8);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&bytes[..usize::from(len)]);
    k
}

/// client + u64 (queue and in-flight entries).
pub fn client_seq(c: &str, seq: u64) -> Vec<u8> {
    let mut k = client(c);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// client + filter (subscriptions).
pub fn client_filter(c: &str, filter: &str) -> Vec<u8> {
    let mut k = client(c);
    k.extend_from_slice(filter.as_bytes());
    k
}

/// client + packet id (inbound QoS 2).
pub fn client_packet_id(c: &str, packet_id: u16) -> Vec<u8> {
    let mut k = client(c);
    k.extend_from_slice(&packet_id.to_be_bytes());
    k
}

/// message id.
pub fn message(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Splits a client-prefixed key into the client ID and the rest.
pub fn split_client(key: &[u8]) -> Result<(&str, &[u8]), String> {
    let (len, rest) = key
        .split_first_chunk::<2>()
        .ok_or_else(|| "key shorter than its client prefix".to_owned())?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err("client ID longer than the key".to_owned());
    }
    let (id, rest) = rest.split_at(len);
    let id = std::str::from_utf8(id).map_err(|_| "client ID is not UTF-8".to_owned())?;
    Ok((id, rest))
}

/// Reads the u64 after a client prefix.
pub fn split_client_seq(key: &[u8]) -> Result<(&str, u64), String> {
    let (c, rest) = split_client(key)?;
    let seq: [u8; 8] = rest
        .try_into()
        .map_err(|_| format!("{} bytes where a sequence number belongs", rest.len()))?;
    Ok((c, u64::from_be_bytes(seq)))
}

/// Reads the packet id after a client prefix.
pub fn split_client_packet_id(key: &[u8]) -> Result<(&str, u16), String> {
    let (c, rest) = split_client(key)?;
    let id: [u8; 2] = rest
        .try_into()
        .map_err(|_| format!("{} bytes where a packet id belongs", rest.len()))?;
    Ok((c, u16::from_be_bytes(id)))
}

/// Reads a message id key.
pub fn split_message(key: &[u8]) -> Result<u64, String> {
    let id: [u8; 8] = key
        .try_into()
        .map_err(|_| format!("{} bytes where a message id belongs", key.len()))?;
    Ok(u64::from_be_bytes(id))
}

/// Reads a UTF-8 key (session client ID without prefix, retained topic).
pub fn utf8(key: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())
}

/// A printable form of a key for error messages.
pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_tables_are_in_declaration_order() {
        for (i, t) in Table::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
        }
    }

    #[test]
    fn client_prefixes_do_not_overlap() {
        let a = client_seq("ab", 1);
        assert!(!a.starts_with(&client("a")));
        assert!(a.starts_with(&client("ab")));
    }

    #[test]
    fn seq_keys_sort_numerically() {
        assert!(client_seq("c", 255) < client_seq("c", 256));
        assert!(client_seq("c", 1) < client_seq("c", u64::MAX));
    }

    #[test]
    fn keys_split_back() {
        assert_eq!(
            split_client_seq(&client_seq("dev/1", 77)),
            Ok(("dev/1", 77))
        );
        assert_eq!(
            split_client_packet_id(&client_packet_id("x", 9)),
            Ok(("x", 9))
        );
        let k = client_filter("x", "a/+/#");
        assert_eq!(split_client(&k), Ok(("x", &b"a/+/#"[..])));
        assert!(split_client(&[0, 5, b'a']).is_err());
        assert!(split_client_seq(&client("x")).is_err());
        assert_eq!(split_message(&message(5)), Ok(5));
    }
}
