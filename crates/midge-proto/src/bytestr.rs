//! `ByteStr`: a UTF-8 string that shares its bytes with the buffer it was read from.

use bytes::Bytes;
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// An immutable UTF-8 string backed by `Bytes`: cloning it is a reference count bump,
/// and decoding one from a packet does not copy.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteStr(Bytes);

// Hash as `str` does, so that `HashMap<ByteStr, _>` can be looked up with a `&str`
// (the `Borrow<str>` contract).
impl std::hash::Hash for ByteStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl ByteStr {
    /// An empty string.
    pub const fn new() -> Self {
        ByteStr(Bytes::new())
    }

    /// Wraps bytes that are valid UTF-8; returns the bytes back if they are not.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Bytes> {
        if std::str::from_utf8(&bytes).is_ok() {
            Ok(ByteStr(bytes))
        } else {
            Err(bytes)
        }
    }

    /// A string from a `'static` literal, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        ByteStr(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8 (`from_utf8` validates,
        // `from_static` and the `From<String>`/`From<&str>` impls take a `str`), and the
        // inner bytes are never mutated. Covered by `bytestr::tests::roundtrip`.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ByteStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ByteStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        ByteStr(Bytes::from(s))
    }
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> Self {
        ByteStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let s = ByteStr::from_utf8(Bytes::from_static("a/ü/€".as_bytes())).unwrap();
        assert_eq!(s.as_str(), "a/ü/€");
        assert!(ByteStr::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_err());
        assert_eq!(ByteStr::from("x").as_str(), "x");
        assert_eq!(ByteStr::from(String::from("y")).as_str(), "y");
        assert_eq!(ByteStr::from_static("z").as_str(), "z");
    }

    #[test]
    fn lookup_by_str_in_hash_map() {
        let mut m = std::collections::HashMap::new();
        m.insert(ByteStr::from("client-1"), 1);
        assert_eq!(m.get("client-1"), Some(&1));
    }
}
