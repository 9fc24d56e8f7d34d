//! Mosquitto's `acl_file`: which topics each client may publish to, subscribe to and receive.
//!
//! Syntax (mosquitto.conf(5), `acl_file`), one rule per line:
//!
//! ```text
//! # comment
//! topic [read|write|readwrite|deny] <topic>    # before any `user` line: anonymous clients
//! user <username>                              # starts that user's section
//! topic [read|write|readwrite|deny] <topic>    # applies to that user
//! pattern [read|write|readwrite|deny] <topic>  # all clients; %c = client id, %u = username
//! ```
//!
//! The access word is optional (then `readwrite`); `<topic>` is the rest of the line and may
//! hold spaces and the `+`/`#` wildcards. `%c`/`%u` must be a whole topic level.
//!
//! The decision follows Mosquitto's `mosquitto_acl_check_default` (src/security_default.c):
//!
//! 1. The client's own `topic` rules (its user section, or the anonymous section when it sent
//!    no username): a matching `deny` refuses; otherwise a matching rule with the access asked
//!    for allows.
//! 2. Still undecided: if the username or client id contains `+` or `#`, refuse (so nobody can
//!    widen a pattern with a wildcard, CVE-2017-7650). Then the `pattern` rules the same way:
//!    `deny` first, then grants; `%u` rules do not apply to clients without a username.
//! 3. Still undecided: refuse.
//!
//! Wildcards in the first level never match topics starting with `$` (MQTT 4.7.2), so `#`
//! does not grant `$SYS`.
//!
//! Subscriptions: Mosquitto 2.0's built-in check grants every SUBSCRIBE (a `FIXME` in
//! `mosquitto_acl_check_default`) and filters each message with the read check at delivery;
//! later Mosquitto versions check the filter with `mosquitto_sub_matches_acl`, where the ACL
//! must cover the whole filter. Midge always filters at delivery ([`Authorizer::can_receive`]),
//! and checks the SUBSCRIBE as [`SubscribeCheck`] says.

use super::{content_lines, read_file, AuthFileError, Authorizer};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The client an access check is about. Borrowed, so a check allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    pub client_id: &'a str,
    /// `None` for a client that connected without a username.
    pub username: Option<&'a str>,
}

impl<'a> ClientInfo<'a> {
    pub fn new(client_id: &'a str, username: Option<&'a str>) -> ClientInfo<'a> {
        ClientInfo {
            client_id,
            username,
        }
    }
}

/// How SUBSCRIBE is checked against read rules. Either way, each message is checked again at
/// delivery, so neither choice lets a client read what its rules deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeCheck {
    /// Grant the subscription when some topic it matches could be readable: a read rule
    /// overlaps the filter and no `deny` rule covers all of it. Only subscriptions that could
    /// never deliver anything are refused, so clients written for Mosquitto 2.0 (which grants
    /// every subscription) keep working, e.g. `#` with a few readable topics.
    #[default]
    Overlaps,
    /// Grant only when one read rule covers every topic the filter matches (`a/#` covers
    /// `a/+/b`; `a/+` does not cover `a/#`), as later Mosquitto's `mosquitto_sub_matches_acl`.
    Covers,
}

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

/// What a check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
}

/// One level of a rule's topic, split at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `+`
    Single,
    /// `#` (always last)
    Multi,
    /// `%c` in a `pattern`
    ClientId,
    /// `%u` in a `pattern`
    Username,
}

#[derive(Debug, Clone)]
struct Rule {
    levels: Box<[Level]>,
}

/// The rules of one section (anonymous, one user, or the patterns), by what they grant.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    deny: Vec<Rule>,
    read: Vec<Rule>,
    write: Vec<Rule>,
}

/// One level of a subscription filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterLevel<'a> {
    Literal(&'a str),
    Single,
    Multi,
}

/// What is being checked: a topic name (publish, delivery) or a filter (subscribe).
#[derive(Clone, Copy)]
enum Target<'t, 'a> {
    Topic(&'t [&'a str]),
    Filter(&'t [FilterLevel<'a>], SubscribeCheck),
}

/// Levels of a checked topic or filter; deep topics spill to the heap, typical ones do not.
type Levels<T> = SmallVec<[T; 16]>;

/// A loaded ACL file. Build with [`AclFile::load`]; use through [`Authorizer`].
#[derive(Debug, Clone)]
pub struct AclFile {
    path: PathBuf,
    anonymous: RuleSet,
    users: HashMap<String, RuleSet>,
    patterns: RuleSet,
    subscribe_check: SubscribeCheck,
    warnings: Vec<String>,
}

impl AclFile {
    /// Reads and parses `path`. Pure: the same file gives the same rules, so a reload is
    /// "load again and swap on success".
    pub fn load(path: impl AsRef<Path>) -> Result<AclFile, AuthFileError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        AclFile::parse(path, &bytes)
    }

    /// Parses file content; `path` only names the file in errors and warnings.
    pub fn parse(path: &Path, content: &[u8]) -> Result<AclFile, AuthFileError> {
        let mut acl = AclFile {
            path: path.to_owned(),
            anonymous: RuleSet::default(),
            users: HashMap::new(),
            patterns: RuleSet::default(),
            subscribe_check: SubscribeCheck::default(),
            warnings: Vec::new(),
        };
        let mut user: Option<String> = None;
        for entry in content_lines(path, content) {
            let (line, text) = entry?;
            let syntax = |message: String| AuthFileError::Syntax {
                path: path.to_owned(),
                line,
                message,
            };
            let (keyword, args) = split_word(text);
            match keyword {
                "user" => {
                    let name = args.trim();
                    if name.is_empty() {
                        return Err(syntax("missing username after 'user'".into()));
                    }
                    user = Some(name.to_owned());
                }
                "topic" | "pattern" => {
                    let is_pattern = keyword == "pattern";
                    let (access, topic) = parse_rule_args(args).map_err(syntax)?;
                    let (rule, warning) = parse_topic(topic, is_pattern).map_err(syntax)?;
                    if let Some(warning) = warning {
                        acl.warnings
                            .push(format!("{}:{line}: {warning}", path.display()));
                    }
                    let set = if is_pattern {
                        &mut acl.patterns
                    } else {
                        match &user {
                            Some(name) => acl.users.entry(name.clone()).or_default(),
                            None => &mut acl.anonymous,
                        }
                    };
                    set.add(access, rule);
                }
                other => {
                    return Err(syntax(format!(
                        "unknown keyword '{other}' (expected topic, pattern or user)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Chooses how SUBSCRIBE is checked (default [`SubscribeCheck::Overlaps`]).
    pub fn with_subscribe_check(mut self, check: SubscribeCheck) -> AclFile {
        self.subscribe_check = check;
        self
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Things worth a log line that did not stop the load (patterns without `%c`/`%u`, or
    /// with them inside a level, where they are plain text).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn decide(&self, client: &ClientInfo<'_>, target: Target<'_, '_>, need: Need) -> bool {
        let own_rules = match client.username {
            Some(name) => self.users.get(name),
            None => Some(&self.anonymous),
        };
        if let Some(decision) = own_rules.and_then(|rules| rules.decide(target, need, None)) {
            return decision;
        }
        if self.patterns.is_empty() {
            return false;
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if dangerous(client.client_id) || client.username.is_some_and(dangerous) {
            return false;
        }
        self.patterns
            .decide(target, need, Some(client))
            .unwrap_or(false)
    }
}

impl Authorizer for AclFile {
    fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        let levels: Levels<&str> = topic.split('/').collect();
        self.decide(client, Target::Topic(&levels), Need::Write)
    }

    fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        // The rules are about the topics a shared subscription receives, not its group name.
        let filter = strip_share(filter);
        let Some(levels) = split_filter(filter) else {
            return false;
        };
        let target = Target::Filter(&levels, self.subscribe_check);
        self.decide(client, target, Need::Read)
    }

    fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        let levels: Levels<&str> = topic.split('/').collect();
        self.decide(client, Target::Topic(&levels), Need::Read)
    }
}

/// The authoriser when no `acl_file` is configured: Mosquitto then allows every topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn can_publish(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        true
    }
    fn can_receive(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        true
    }
}

/// Allows nothing: read access of a session whose listener is not known yet (see
/// `BrokerInner::recovered_read_access`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Authorizer for DenyAll {
    fn can_publish(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        false
    }
    fn can_subscribe(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        false
    }
    fn can_receive(&self, _: &ClientInfo<'_>, _: &str) -> bool {
        false
    }
}

impl RuleSet {
    fn add(&mut self, access: Access, rule: Rule) {
        match access {
            Access::Deny => self.deny.push(rule),
            Access::Read => self.read.push(rule),
            Access::Write => self.write.push(rule),
            Access::ReadWrite => {
                self.read.push(rule.clone());
                self.write.push(rule);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.read.is_empty() && self.write.is_empty()
    }

    /// `Some(false)` if a deny rule applies, `Some(true)` if a grant does, `None` if neither.
    fn decide(
        &self,
        target: Target<'_, '_>,
        need: Need,
        client: Option<&ClientInfo<'_>>,
    ) -> Option<bool> {
        let grants = match need {
            Need::Read => &self.read,
            Need::Write => &self.write,
        };
        match target {
            Target::Topic(topic) => {
                if self
                    .deny
                    .iter()
                    .any(|r| topic_matches(&r.levels, topic, client))
                {
                    return Some(false);
                }
                if grants
                    .iter()
                    .any(|r| topic_matches(&r.levels, topic, client))
                {
                    return Some(true);
                }
            }
            Target::Filter(filter, check) => {
                // A deny refuses the subscription only if it covers all of it; a partial one
                // is applied message by message at delivery.
                if self.deny.iter().any(|r| covers(&r.levels, filter, client)) {
                    return Some(false);
                }
                let granted = |r: &Rule| match check {
                    SubscribeCheck::Overlaps => overlaps(&r.levels, filter, client),
                    SubscribeCheck::Covers => covers(&r.levels, filter, client),
                };
                if grants.iter().any(granted) {
                    return Some(true);
                }
            }
        }
        None
    }
}

/// `word rest` -> (`word`, `rest` without leading blanks).
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

/// `[access] <topic>`: with one word, that word is the topic and access is readwrite (as in
/// Mosquitto, so `topic read` is read-write access to the topic `read`).
fn parse_rule_args(args: &str) -> Result<(Access, &str), String> {
    let (first, rest) = split_word(args.trim());
    if first.is_empty() {
        return Err("empty topic".into());
    }
    if rest.is_empty() {
        return Ok((Access::ReadWrite, first));
    }
    let access = match first {
        "read" => Access::Read,
        "write" => Access::Write,
        "readwrite" => Access::ReadWrite,
        "deny" => Access::Deny,
        other => {
            return Err(format!(
                "invalid access type '{other}' (expected read, write, readwrite or deny)"
            ))
        }
    };
    Ok((access, rest.trim()))
}

/// Validates a rule's topic as Mosquitto does (`mosquitto_sub_topic_check`) and splits it.
fn parse_topic(topic: &str, is_pattern: bool) -> Result<(Rule, Option<String>), String> {
    if topic.len() > 65535 {
        return Err("topic longer than 65535 bytes".into());
    }
    let count = topic.split('/').count();
    let mut levels = Vec::with_capacity(count);
    let mut substitutes = false;
    let mut warning = None;
    for (i, level) in topic.split('/').enumerate() {
        let parsed = match level {
            "#" if i + 1 == count => Level::Multi,
            "+" => Level::Single,
            "%c" if is_pattern => Level::ClientId,
            "%u" if is_pattern => Level::Username,
            _ if level.contains(['+', '#']) => {
                return Err(format!(
                    "invalid ACL topic '{topic}': '+' and '#' must be a whole level, '#' the last"
                ))
            }
            _ => {
                if is_pattern && (level.contains("%c") || level.contains("%u")) {
                    warning = Some(format!(
                        "in pattern '{topic}', %c and %u are plain text unless they are the \
                         whole level"
                    ));
                }
                Level::Literal(level.into())
            }
        };
        substitutes |= matches!(parsed, Level::ClientId | Level::Username);
        levels.push(parsed);
    }
    if is_pattern && !substitutes && warning.is_none() {
        warning = Some(format!("pattern '{topic}' does not contain %c or %u"));
    }
    Ok((
        Rule {
            levels: levels.into_boxed_slice(),
        },
        warning,
    ))
}

/// `$share/<group>/<filter>` -> `<filter>`.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, filter)| filter)
}

/// Splits a subscription filter; `None` if it is not a valid filter.
fn split_filter(filter: &str) -> Option<Levels<FilterLevel<'_>>> {
    if filter.is_empty() {
        return None;
    }
    let mut levels: Levels<FilterLevel<'_>> = SmallVec::new();
    let mut parts = filter.split('/').peekable();
    while let Some(level) = parts.next() {
        levels.push(match level {
            "#" if parts.peek().is_none() => FilterLevel::Multi,
            "+" => FilterLevel::Single,
            _ if level.contains(['+', '#']) => return None,
            _ => FilterLevel::Literal(level),
        });
    }
    Some(levels)
}

/// The text a literal-like rule level stands for: the literal, or the client's id/username.
/// `None` when it cannot match anything (a wildcard, or `%u` for a client without username).
fn literal_value<'r>(level: &'r Level, client: Option<&ClientInfo<'r>>) -> Option<&'r str> {
    let value = match level {
        Level::Literal(text) => return Some(text),
        Level::Single | Level::Multi => return None,
        Level::ClientId => client.map(|c| c.client_id),
        Level::Username => client.and_then(|c| c.username),
    };
    value.filter(|v| !v.is_empty())
}

fn is_wildcard(level: &Level) -> bool {
    matches!(level, Level::Single | Level::Multi)
}

/// Whether a topic name matches a rule (Mosquitto's `mosquitto_topic_matches_sub` with
/// whole-level `%c`/`%u` substitution).
fn topic_matches(rule: &[Level], topic: &[&str], client: Option<&ClientInfo<'_>>) -> bool {
    let dollar = topic.first().is_some_and(|l| l.starts_with('$'));
    if dollar && rule.first().is_some_and(is_wildcard) {
        return false;
    }
    for (i, level) in rule.iter().enumerate() {
        match level {
            Level::Multi => return true,
            Level::Single => {
                if i >= topic.len() {
                    return false;
                }
            }
            _ => match (topic.get(i), literal_value(level, client)) {
                (Some(t), Some(v)) if *t == v => {}
                _ => return false,
            },
        }
    }
    rule.len() == topic.len()
}

/// Whether every topic `filter` matches is matched by `rule`.
fn covers(rule: &[Level], filter: &[FilterLevel<'_>], client: Option<&ClientInfo<'_>>) -> bool {
    let dollar = matches!(filter.first(), Some(FilterLevel::Literal(l)) if l.starts_with('$'));
    if dollar && rule.first().is_some_and(is_wildcard) {
        return false;
    }
    for (i, level) in rule.iter().enumerate() {
        if *level == Level::Multi {
            return true;
        }
        match (filter.get(i), level) {
            // A filter `#` first matches every topic of one level or more, as a rule `+/#`
            // does; anywhere else it also matches its parent, which only a rule `#` (returned
            // above) matches too.
            (Some(FilterLevel::Multi), Level::Single) => {
                return i == 0 && rule.len() == 2 && rule[1] == Level::Multi
            }
            (None | Some(FilterLevel::Multi), _) => return false,
            (Some(_), Level::Single) => {}
            (Some(FilterLevel::Single), _) => return false,
            (Some(FilterLevel::Literal(f)), _) => {
                if literal_value(level, client) != Some(*f) {
                    return false;
                }
            }
        }
    }
    rule.len() == filter.len()
}

/// Whether some topic matches both `rule` and `filter`.
fn overlaps(rule: &[Level], filter: &[FilterLevel<'_>], client: Option<&ClientInfo<'_>>) -> bool {
    // A topic starting with '$' is matched only through a literal first level.
    let rule_dollar = rule
        .first()
        .and_then(|l| literal_value(l, client))
        .is_some_and(|v| v.starts_with('$'));
    let filter_dollar =
        matches!(filter.first(), Some(FilterLevel::Literal(l)) if l.starts_with('$'));
    let rule_wild = rule.first().is_some_and(is_wildcard);
    let filter_wild = matches!(
        filter.first(),
        Some(FilterLevel::Single | FilterLevel::Multi)
    );
    if (filter_dollar && rule_wild) || (rule_dollar && filter_wild) {
        return false;
    }
    let mut i = 0;
    loop {
        match (rule.get(i), filter.get(i)) {
            (Some(Level::Multi), _) => return true,
            // The filter's `#` takes whatever the rule still asks for, provided each level
            // stands for something.
            (_, Some(FilterLevel::Multi)) => {
                return rule[i..]
                    .iter()
                    .all(|l| is_wildcard(l) || literal_value(l, client).is_some())
            }
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Level::Single), Some(_)) => {}
            // `+` matches any level, but a `%u` of a client without a username (or an empty
            // `%c`) stands for no level at all, as in `topic_matches`.
            (Some(level), Some(FilterLevel::Single)) => {
                if literal_value(level, client).is_none() {
                    return false;
                }
            }
            (Some(level), Some(FilterLevel::Literal(f))) => {
                if literal_value(level, client) != Some(*f) {
                    return false;
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> AclFile {
        AclFile::parse(Path::new("acl"), text.as_bytes()).unwrap()
    }

    fn rule(topic: &str) -> Box<[Level]> {
        parse_topic(topic, true).unwrap().0.levels
    }

    fn filter(f: &str) -> Levels<FilterLevel<'_>> {
        split_filter(f).unwrap()
    }

    #[test]
    fn topic_matching_follows_mqtt_wildcards() {
        let topic = |t: &'static str| -> Vec<&'static str> { t.split('/').collect() };
        let m = |r: &str, t: &'static str| topic_matches(&rule(r), &topic(t), None);
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(m("a/+", "a/b"));
        assert!(!m("a/+", "a"));
        assert!(m("a/+", "a/"));
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b/c"));
        assert!(m("#", "a/b"));
        assert!(!m("#", "$SYS/broker"));
        assert!(!m("+/broker", "$SYS/broker"));
        assert!(m("$SYS/#", "$SYS/broker/uptime"));
        assert!(m("+/+", "/a"));
    }

    #[test]
    fn covers_is_wildcard_aware() {
        let c = |r: &str, f: &str| covers(&rule(r), &filter(f), None);
        assert!(c("$SYS/#", "$SYS/broker/#"));
        assert!(!c("$SYS/broker/uptime", "$SYS/broker/#"));
        assert!(c("a/#", "a/+/b"));
        assert!(c("a/#", "a/#"));
        assert!(c("a/#", "a"));
        assert!(c("a/+", "a/+"));
        assert!(c("a/+", "a/b"));
        assert!(!c("a/+", "a/#"));
        assert!(!c("a/b", "a/+"));
        assert!(!c("a", "a/#"));
        assert!(!c("#", "$SYS/#"));
        assert!(!c("a/+/#", "a/#"));
    }

    #[test]
    fn overlaps_finds_a_common_topic() {
        let o = |r: &str, f: &str| overlaps(&rule(r), &filter(f), None);
        assert!(o("a/b", "a/+"));
        assert!(o("a/b", "#"));
        assert!(o("a/+/c", "a/b/+"));
        assert!(o("a", "a/#"));
        assert!(o("a/#", "a"));
        assert!(!o("a/b", "a/c"));
        assert!(!o("a/b", "a/b/c"));
        assert!(!o("$SYS/x", "#"));
        assert!(!o("#", "$SYS/x"));
        assert!(o("$SYS/#", "$SYS/+"));
    }

    /// MQTT matching written the obvious way, as the model the fast matchers are held to.
    fn naive_matches(pattern: &[&str], topic: &[&str]) -> bool {
        if topic.first().is_some_and(|t| t.starts_with('$'))
            && pattern.first().is_some_and(|p| *p == "+" || *p == "#")
        {
            return false;
        }
        fn go(p: &[&str], t: &[&str]) -> bool {
            match (p.first(), t.first()) {
                (Some(&"#"), _) => true,
                (None, None) => true,
                (Some(&"+"), Some(_)) => go(&p[1..], &t[1..]),
                (Some(a), Some(b)) => a == b && go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        go(pattern, topic)
    }

    /// Every filter of 1 to 3 levels over `alphabet`, with `#` only last.
    fn all_patterns(alphabet: &[&'static str]) -> Vec<Vec<&'static str>> {
        let mut out: Vec<Vec<&'static str>> = Vec::new();
        let mut frontier: Vec<Vec<&'static str>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for level in alphabet {
                    let mut p = prefix.clone();
                    p.push(level);
                    out.push(p.clone());
                    if *level != "#" {
                        next.push(p);
                    }
                }
            }
            frontier = next;
        }
        out
    }

    /// Checks `topic_matches`, `covers` and `overlaps` against their definitions over every
    /// topic of up to 4 levels: matches = the naive matcher; covers = every topic the filter
    /// matches, the rule matches; overlaps = some topic matches both. `%c` (client id "b")
    /// takes the substitution path.
    #[test]
    fn matchers_agree_with_their_definitions_exhaustively() {
        let client = ClientInfo::new("b", Some("u"));
        let mut topics: Vec<Vec<&str>> = Vec::new();
        let mut frontier: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for level in ["a", "b", "$s", "z"] {
                    let mut t = prefix.clone();
                    t.push(level);
                    topics.push(t.clone());
                    next.push(t);
                }
            }
            frontier = next;
        }
        let rules = all_patterns(&["a", "%c", "$s", "+", "#"]);
        let filters = all_patterns(&["a", "b", "$s", "+", "#"]);
        for rule_text in &rules {
            let rule = rule(&rule_text.join("/"));
            // The rule with %c replaced by the client id, for the naive model.
            let model: Vec<&str> = rule_text
                .iter()
                .map(|l| if *l == "%c" { "b" } else { *l })
                .collect();
            let rule_hits: Vec<bool> = topics
                .iter()
                .map(|t| {
                    let fast = topic_matches(&rule, t, Some(&client));
                    assert_eq!(fast, naive_matches(&model, t), "{rule_text:?} vs {t:?}");
                    fast
                })
                .collect();
            for filter_text in &filters {
                let joined = filter_text.join("/");
                let levels = filter(&joined);
                let mut all = true;
                let mut some = false;
                for (t, &rule_hit) in topics.iter().zip(&rule_hits) {
                    if naive_matches(filter_text, t) {
                        all &= rule_hit;
                        some |= rule_hit;
                    }
                }
                let what = format!("rule {rule_text:?}, filter {joined}");
                assert_eq!(covers(&rule, &levels, Some(&client)), all, "covers: {what}");
                assert_eq!(
                    overlaps(&rule, &levels, Some(&client)),
                    some,
                    "overlaps: {what}"
                );
            }
        }
    }

    #[test]
    fn substitution_compares_whole_levels() {
        let alice = ClientInfo::new("dev1", Some("alice"));
        let t = |t: &'static str| -> Vec<&'static str> { t.split('/').collect() };
        let m = |r: &str, topic: &'static str, c: &ClientInfo<'_>| {
            topic_matches(&rule(r), &t(topic), Some(c))
        };
        assert!(m("c/%c/x", "c/dev1/x", &alice));
        assert!(!m("c/%c/x", "c/dev/x", &alice));
        assert!(!m("c/%c/x", "c/dev12/x", &alice));
        assert!(m("u/%u/#", "u/alice/a/b", &alice));
        let anon = ClientInfo::new("dev1", None);
        assert!(!m("u/%u/#", "u//a", &anon));
    }

    /// A `%u` level stands for nothing when the client has no username (and `%c` for nothing
    /// when the client id is empty), so a `+` in a filter cannot meet it: such a pattern
    /// grants no subscription, as it grants no delivery.
    #[test]
    fn substitution_without_a_value_overlaps_no_filter() {
        let acl = acl("pattern read inbox/%u\npattern read dev/%c/#\n");
        let anon = ClientInfo::new("c1", None);
        assert!(!acl.can_subscribe(&anon, "inbox/+"));
        assert!(!acl.can_subscribe(&anon, "inbox/#"));
        assert!(acl.can_subscribe(&anon, "dev/+/x"));
        let alice = ClientInfo::new("c1", Some("alice"));
        assert!(acl.can_subscribe(&alice, "inbox/+"));
        let no_id = ClientInfo::new("", Some("alice"));
        assert!(!acl.can_subscribe(&no_id, "dev/+/x"));
    }

    #[test]
    fn parse_errors_name_the_line() {
        for (text, line) in [
            ("topic read a/#\nbogus x\n", 2),
            ("topic\n", 1),
            ("\nuser\n", 2),
            ("topic readonly a/b\n", 1),
            ("# c\ntopic read a/#/b\n", 2),
            ("topic read a/b+\n", 1),
        ] {
            let err = AclFile::parse(Path::new("f.acl"), text.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("f.acl:{line}: ")),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn one_word_after_topic_is_the_topic_with_readwrite_access() {
        let acl = acl("topic read\n");
        let anon = ClientInfo::new("c", None);
        assert!(acl.can_publish(&anon, "read"));
        assert!(acl.can_receive(&anon, "read"));
    }

    #[test]
    fn topic_with_spaces_is_the_rest_of_the_line() {
        let acl = acl("topic write  a b/c d  \n");
        let anon = ClientInfo::new("c", None);
        assert!(acl.can_publish(&anon, "a b/c d"));
    }

    #[test]
    fn pattern_warnings() {
        let acl = acl("pattern read a/b\npattern read a/x%c\npattern read a/%c\n");
        assert_eq!(acl.warnings().len(), 2, "{:?}", acl.warnings());
        assert!(acl.warnings()[0].starts_with("acl:1: "));
        assert!(acl.warnings()[1].starts_with("acl:2: "));
    }

    #[test]
    fn shared_subscription_is_checked_on_its_filter() {
        let acl = acl("topic read a/#\n");
        let anon = ClientInfo::new("c", None);
        assert!(acl.can_subscribe(&anon, "$share/group/a/b"));
        assert!(!acl.can_subscribe(&anon, "$share/group/b"));
    }

    #[test]
    fn invalid_filter_is_refused() {
        let acl = acl("topic read #\n");
        let anon = ClientInfo::new("c", None);
        assert!(!acl.can_subscribe(&anon, "a/#/b"));
        assert!(!acl.can_subscribe(&anon, ""));
    }
}
