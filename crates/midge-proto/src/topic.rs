//! Topic names and topic filters: validation, wildcard matching and shared-subscription
//! parsing, as MQTT 5.0 sections 4.7 and 4.8.2 define them (3.1.1 is the same minus `$share`).
//!
//! Levels are what `str::split('/')` yields, so empty levels are real levels:
//! `"/a"` has the levels `""` and `"a"`, and `"+/+"` matches it.

use thiserror::Error;

/// The largest topic a UTF-8 Encoded String can carry [MQTT-1.5.4-1].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix of a shared subscription's topic filter [MQTT-4.8.2-1].
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or topic filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    #[error("topic name contains a wildcard ('+' or '#')")]
    Wildcard,
    #[error("wildcard not alone in its level, or '#' not the last level")]
    BadWildcard,
    #[error("topic contains the null character U+0000")]
    NullChar,
    #[error("invalid shared subscription: {0}")]
    BadShare(&'static str),
}

/// Checks a topic name, as carried by PUBLISH or a will: non-empty [MQTT-4.7.3-1],
/// no wildcard [MQTT-3.3.2-2], no U+0000 [MQTT-1.5.4-2], at most 65535 bytes.
pub fn valid_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a topic filter, as carried by SUBSCRIBE and UNSUBSCRIBE: non-empty [MQTT-4.7.3-1],
/// `#` alone in the last level [MQTT-4.7.1-1], `+` alone in its level [MQTT-4.7.1-2],
/// no U+0000 [MQTT-1.5.4-2], at most 65535 bytes.
///
/// A `$share/...` filter is checked as an ordinary filter here; use [`parse_shared`] first.
pub fn valid_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let hash_ok = !level.contains('#') || (level == "#" && is_last);
        let plus_ok = !level.contains('+') || level == "+";
        if !hash_ok || !plus_ok {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NullChar);
    }
    Ok(())
}

/// Whether `filter` matches the topic name `topic`. Both are assumed valid.
///
/// `"a/#"` matches `"a"` (the parent level) [MQTT-4.7.1-1 non-normative example], `+`
/// matches exactly one level (possibly empty), and a filter starting with a wildcard does
/// not match a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            _ => return false,
        }
    }
}

/// Splits a shared subscription's filter `$share/{ShareName}/{filter}` into
/// `(ShareName, filter)`; a filter without the `$share/` prefix is not shared (`Ok(None)`).
///
/// The ShareName must be at least one character and contain no `/`, `+` or `#`
/// [MQTT-4.8.2-1, MQTT-4.8.2-2], and a valid topic filter must follow it [MQTT-4.8.2-1].
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::BadShare("no topic filter after the share name"));
    };
    if group.is_empty() {
        return Err(TopicError::BadShare("empty share name"));
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::BadShare("share name contains a wildcard"));
    }
    if inner.is_empty() {
        return Err(TopicError::BadShare(
            "empty topic filter after the share name",
        ));
    }
    valid_topic_filter(inner)?;
    Ok(Some((group, inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_must_not_be_empty() {
        // [MQTT-4.7.3-1]
        assert_eq!(valid_topic_name(""), Err(TopicError::Empty));
        assert_eq!(valid_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn topic_name_must_not_contain_wildcards() {
        // [MQTT-3.3.2-2]
        for name in ["#", "+", "a/+", "a/#", "a+", "sport/tennis#", "+/x"] {
            assert_eq!(valid_topic_name(name), Err(TopicError::Wildcard), "{name}");
        }
    }

    #[test]
    fn topic_must_not_contain_null_char() {
        // [MQTT-1.5.4-2]
        assert_eq!(valid_topic_name("a\0b"), Err(TopicError::NullChar));
        assert_eq!(valid_topic_filter("a/\0/#"), Err(TopicError::NullChar));
    }

    #[test]
    fn topic_longer_than_65535_bytes_is_rejected() {
        // [MQTT-1.5.4-1]: a UTF-8 Encoded String holds at most 65535 bytes.
        let ok = "a".repeat(MAX_TOPIC_LEN);
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(valid_topic_name(&ok), Ok(()));
        assert_eq!(valid_topic_name(&long), Err(TopicError::TooLong));
        assert_eq!(valid_topic_filter(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn empty_levels_are_valid() {
        // [MQTT-4.7.3-1]: zero-length levels are allowed, only the whole topic must be non-empty.
        for name in [
            "/",
            "//",
            "/a",
            "a/",
            "a//b",
            "$SYS/x",
            "sport/tennis/player1",
        ] {
            assert_eq!(valid_topic_name(name), Ok(()), "{name}");
            assert_eq!(valid_topic_filter(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hash_must_be_alone_and_last() {
        // [MQTT-4.7.1-1]
        for ok in ["#", "a/#", "/#", "+/#", "a//#", "sport/tennis/#"] {
            assert_eq!(valid_topic_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["a/#/b", "#/a", "a/b#", "a#", "##", "a/#/", "sport/tennis#"] {
            assert_eq!(
                valid_topic_filter(bad),
                Err(TopicError::BadWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn plus_must_be_alone_in_its_level() {
        // [MQTT-4.7.1-2]
        for ok in [
            "+",
            "+/+",
            "/+",
            "+/",
            "a/+/b",
            "+/tennis/#",
            "sport/+/player1",
        ] {
            assert_eq!(valid_topic_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["a+", "+a", "a/b+/c", "++", "sport+"] {
            assert_eq!(
                valid_topic_filter(bad),
                Err(TopicError::BadWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn hash_matches_parent_and_children() {
        // [MQTT-4.7.1-1] non-normative example: "sport/tennis/player1/#" matches
        // "sport/tennis/player1" itself as well as its children.
        assert!(matches("sport/tennis/#", "sport/tennis"));
        assert!(matches("sport/tennis/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/tennis/#", "sport"));
        assert!(!matches("sport/tennis/#", "sport/tennisx"));
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        // [MQTT-4.7.1-2] non-normative examples.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+", "sport"));
        assert!(!matches("+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/+", "/"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/tennis/#", "sport/tennis"));
    }

    #[test]
    fn exact_filters_match_level_by_level() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a", "a/b"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "//"));
        // Topic names and filters are case sensitive [MQTT-4.7.3-4 non-normative].
        assert!(!matches("ACCOUNTS", "Accounts"));
    }

    #[test]
    fn wildcard_first_level_does_not_match_dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("#", "$SYS"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$"));
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b"));
    }

    #[test]
    fn shared_filters_are_split_into_group_and_filter() {
        // [MQTT-4.8.2-1]
        assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse_shared("$share/g/#"), Ok(Some(("g", "#"))));
        assert_eq!(parse_shared("$share/g//"), Ok(Some(("g", "/"))));
        assert_eq!(parse_shared("$share/g/$SYS/+"), Ok(Some(("g", "$SYS/+"))));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(parse_shared("$sharex/g/a"), Ok(None));
        assert_eq!(parse_shared("$SYS/#"), Ok(None));
    }

    #[test]
    fn shared_filter_needs_a_share_name_and_a_filter() {
        // [MQTT-4.8.2-1]: ShareName at least one character, followed by '/' and a filter.
        assert!(matches!(
            parse_shared("$share/"),
            Err(TopicError::BadShare(_))
        ));
        assert!(matches!(
            parse_shared("$share//a"),
            Err(TopicError::BadShare(_))
        ));
        assert!(matches!(
            parse_shared("$share/g"),
            Err(TopicError::BadShare(_))
        ));
        assert!(matches!(
            parse_shared("$share/g/"),
            Err(TopicError::BadShare(_))
        ));
        assert_eq!(parse_shared("$share/g/a/#/b"), Err(TopicError::BadWildcard));
    }

    #[test]
    fn share_name_must_not_contain_wildcards() {
        // [MQTT-4.8.2-2]
        assert!(matches!(
            parse_shared("$share/+/a"),
            Err(TopicError::BadShare(_))
        ));
        assert!(matches!(
            parse_shared("$share/#/a"),
            Err(TopicError::BadShare(_))
        ));
        assert!(matches!(
            parse_shared("$share/g+/a"),
            Err(TopicError::BadShare(_))
        ));
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(TopicError::Empty.to_string(), "topic is empty");
        assert_eq!(
            TopicError::BadShare("empty share name").to_string(),
            "invalid shared subscription: empty share name"
        );
    }
}
