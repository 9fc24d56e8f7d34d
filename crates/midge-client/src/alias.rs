//! Topic aliases (MQTT 5.0 section 3.3.2.3.4): ours towards the server, and the server's
//! towards us. Both live and die with one network connection.

use midge_proto::{ByteStr, Publish};
use std::collections::HashMap;

/// Aliases we assign to topics we publish, up to the server's Topic Alias Maximum.
/// First come, first served: once the table is full, further topics go unaliased
/// (re-pointing an alias would cost a full topic anyway).
#[derive(Debug, Default)]
pub(crate) struct OutgoingAliases {
    max: u16,
    by_topic: HashMap<ByteStr, u16>,
}

impl OutgoingAliases {
    pub(crate) fn new(max: u16) -> Self {
        OutgoingAliases {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// Rewrites `publish` to use an alias. Returns the alias when this call created it
    /// (so that the caller can [`forget`](Self::forget) it if the packet is not sent).
    pub(crate) fn apply(&mut self, publish: &mut Publish) -> Option<u16> {
        if let Some(&alias) = self.by_topic.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = ByteStr::new();
            return None;
        }
        let next = u16::try_from(self.by_topic.len() + 1).ok()?;
        if next > self.max {
            return None;
        }
        self.by_topic.insert(publish.topic.clone(), next);
        publish.properties.topic_alias = Some(next);
        Some(next)
    }

    /// Undoes an alias created by `apply` for a packet that was never sent.
    pub(crate) fn forget(&mut self, topic: &str) {
        self.by_topic.remove(topic);
    }
}

/// Aliases the server assigned on PUBLISH packets it sent us.
#[derive(Debug, Default)]
pub(crate) struct IncomingAliases {
    max: u16,
    by_alias: HashMap<u16, ByteStr>,
}

impl IncomingAliases {
    pub(crate) fn new(max: u16) -> Self {
        IncomingAliases {
            max,
            by_alias: HashMap::new(),
        }
    }

    /// Resolves the alias of a received PUBLISH into its topic, and removes the alias
    /// property. An alias of 0, above our maximum, or unknown with an empty topic is an
    /// error (Topic Alias invalid, or Protocol Error for an empty topic without alias).
    pub(crate) fn resolve(&mut self, publish: &mut Publish) -> Result<(), &'static str> {
        match publish.properties.topic_alias.take() {
            None if publish.topic.is_empty() => Err("PUBLISH with an empty topic and no alias"),
            None => Ok(()),
            Some(alias) if alias == 0 || alias > self.max => {
                Err("topic alias 0 or above our Topic Alias Maximum")
            }
            Some(alias) if publish.topic.is_empty() => match self.by_alias.get(&alias) {
                Some(topic) => {
                    publish.topic = topic.clone();
                    Ok(())
                }
                None => Err("unknown topic alias"),
            },
            Some(alias) => {
                self.by_alias.insert(alias, publish.topic.clone());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str) -> Publish {
        Publish {
            topic: topic.into(),
            ..Publish::default()
        }
    }

    #[test]
    fn outgoing_aliases_are_assigned_then_reused_then_run_out() {
        let mut aliases = OutgoingAliases::new(2);
        let mut a = publish("a");
        assert_eq!(aliases.apply(&mut a), Some(1));
        assert_eq!((a.topic.as_str(), a.properties.topic_alias), ("a", Some(1)));
        let mut a2 = publish("a");
        assert_eq!(aliases.apply(&mut a2), None);
        assert_eq!(
            (a2.topic.as_str(), a2.properties.topic_alias),
            ("", Some(1))
        );
        assert_eq!(aliases.apply(&mut publish("b")), Some(2));
        let mut c = publish("c");
        assert_eq!(aliases.apply(&mut c), None);
        assert_eq!((c.topic.as_str(), c.properties.topic_alias), ("c", None));
    }

    #[test]
    fn forgotten_alias_is_assigned_again() {
        let mut aliases = OutgoingAliases::new(1);
        assert_eq!(aliases.apply(&mut publish("a")), Some(1));
        aliases.forget("a");
        assert_eq!(aliases.apply(&mut publish("b")), Some(1));
    }

    #[test]
    fn no_aliases_when_the_server_allows_none() {
        let mut aliases = OutgoingAliases::new(0);
        let mut a = publish("a");
        assert_eq!(aliases.apply(&mut a), None);
        assert_eq!(a.properties.topic_alias, None);
    }

    #[test]
    fn incoming_alias_is_learned_then_resolved() {
        let mut aliases = IncomingAliases::new(5);
        let mut first = publish("x/y");
        first.properties.topic_alias = Some(3);
        aliases.resolve(&mut first).unwrap();
        assert_eq!(first.properties.topic_alias, None);
        let mut second = publish("");
        second.properties.topic_alias = Some(3);
        aliases.resolve(&mut second).unwrap();
        assert_eq!(second.topic, "x/y");
    }

    #[test]
    fn invalid_incoming_aliases_are_errors() {
        let mut aliases = IncomingAliases::new(5);
        for (topic, alias) in [("", None), ("t", Some(0)), ("t", Some(6)), ("", Some(2))] {
            let mut p = publish(topic);
            p.properties.topic_alias = alias;
            assert!(aliases.resolve(&mut p).is_err(), "{topic:?} {alias:?}");
        }
    }
}
