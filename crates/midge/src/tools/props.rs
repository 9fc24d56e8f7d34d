//! `-D command identifier value`: MQTT 5 properties given on the command line, with
//! Mosquitto's names and error messages.

use midge_client::Properties;

/// The packets a property can be given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropCommand {
    Connect,
    Publish,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Will,
    Auth,
}

impl PropCommand {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "connect" => PropCommand::Connect,
            "publish" => PropCommand::Publish,
            "subscribe" => PropCommand::Subscribe,
            "unsubscribe" => PropCommand::Unsubscribe,
            "disconnect" => PropCommand::Disconnect,
            "will" => PropCommand::Will,
            "auth" => PropCommand::Auth,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            PropCommand::Connect => "connect",
            PropCommand::Publish => "publish",
            PropCommand::Subscribe => "subscribe",
            PropCommand::Unsubscribe => "unsubscribe",
            PropCommand::Disconnect => "disconnect",
            PropCommand::Will => "will",
            PropCommand::Auth => "auth",
        }
    }
}

/// Properties per packet, as collected from `-D`.
#[derive(Debug, Clone, Default)]
pub struct PropertySets {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
    pub auth: Properties,
}

impl PropertySets {
    fn for_command(&mut self, command: PropCommand) -> &mut Properties {
        match command {
            PropCommand::Connect => &mut self.connect,
            PropCommand::Publish => &mut self.publish,
            PropCommand::Subscribe => &mut self.subscribe,
            PropCommand::Unsubscribe => &mut self.unsubscribe,
            PropCommand::Disconnect => &mut self.disconnect,
            PropCommand::Will => &mut self.will,
            PropCommand::Auth => &mut self.auth,
        }
    }
}

/// Which commands accept which property (MQTT 5.0 table 2.2.2.2, client side).
fn allowed(name: &str, command: PropCommand) -> bool {
    use PropCommand::*;
    let commands: &[PropCommand] = match name {
        "payload-format-indicator"
        | "message-expiry-interval"
        | "content-type"
        | "response-topic"
        | "correlation-data" => &[Publish, Will],
        "topic-alias" => &[Publish],
        "subscription-identifier" => &[Subscribe],
        "session-expiry-interval" => &[Connect, Disconnect],
        "authentication-method" | "authentication-data" => &[Connect, Auth],
        "request-problem-information"
        | "request-response-information"
        | "receive-maximum"
        | "topic-alias-maximum"
        | "maximum-packet-size" => &[Connect],
        "will-delay-interval" => &[Will],
        "reason-string" => &[Disconnect, Auth],
        "server-reference" => &[Disconnect],
        "user-property" => &[
            Connect,
            Publish,
            Subscribe,
            Unsubscribe,
            Disconnect,
            Will,
            Auth,
        ],
        // Properties only a server sends.
        _ => &[],
    };
    commands.contains(&command)
}

const KNOWN: &[&str] = &[
    "payload-format-indicator",
    "message-expiry-interval",
    "content-type",
    "response-topic",
    "correlation-data",
    "subscription-identifier",
    "session-expiry-interval",
    "assigned-client-identifier",
    "server-keep-alive",
    "authentication-method",
    "authentication-data",
    "request-problem-information",
    "will-delay-interval",
    "request-response-information",
    "response-information",
    "server-reference",
    "reason-string",
    "receive-maximum",
    "topic-alias-maximum",
    "topic-alias",
    "maximum-qos",
    "retain-available",
    "user-property",
    "maximum-packet-size",
    "wildcard-subscription-available",
    "subscription-identifier-available",
    "shared-subscription-available",
];

/// Parses one `-D` starting at `args[*i]` (the command); leaves `*i` on its last value.
pub fn parse_property(
    args: &[String],
    i: &mut usize,
    sets: &mut PropertySets,
) -> Result<(), String> {
    const NOT_ENOUGH: &str =
        "Error: --property argument given but not enough arguments specified.\n";
    let (Some(command), Some(name), Some(value)) =
        (args.get(*i), args.get(*i + 1), args.get(*i + 2))
    else {
        return Err(NOT_ENOUGH.into());
    };
    let command = PropCommand::parse(command)
        .ok_or_else(|| "Error: Invalid command given in --property argument.\n".to_string())?;
    let name = name.to_ascii_lowercase();
    if !KNOWN.contains(&name.as_str()) {
        return Err("Error: Invalid property name given in --property argument.\n".into());
    }
    if !allowed(&name, command) {
        return Err(format!(
            "Error: {name} property not allowed for {} in --property argument.\n",
            command.name()
        ));
    }
    let props = sets.for_command(command);
    *i += 2;
    if name == "user-property" {
        let Some(second) = args.get(*i + 1) else {
            return Err(NOT_ENOUGH.into());
        };
        props
            .user_properties
            .push((value.as_str().into(), second.as_str().into()));
        *i += 1;
        return Ok(());
    }
    set(props, &name, value)
}

fn set(p: &mut Properties, name: &str, value: &str) -> Result<(), String> {
    let byte = || u8::try_from(atoi(value)).map_err(|_| invalid(name));
    let u16v = || u16::try_from(atoi(value)).map_err(|_| invalid(name));
    let u32v = || u32::try_from(atoi(value)).map_err(|_| invalid(name));
    match name {
        "payload-format-indicator" => p.payload_format_indicator = Some(byte()?),
        "message-expiry-interval" => p.message_expiry_interval = Some(u32v()?),
        "content-type" => p.content_type = Some(value.into()),
        "response-topic" => p.response_topic = Some(value.into()),
        "correlation-data" => p.correlation_data = Some(value.to_owned().into()),
        "subscription-identifier" => {
            let id = u32v()?;
            if id == 0 || id > 268_435_455 {
                return Err(invalid(name));
            }
            p.subscription_identifiers = vec![id];
        }
        "session-expiry-interval" => p.session_expiry_interval = Some(u32v()?),
        "authentication-method" => p.authentication_method = Some(value.into()),
        "authentication-data" => p.authentication_data = Some(value.to_owned().into()),
        "request-problem-information" => p.request_problem_information = Some(byte()?),
        "will-delay-interval" => p.will_delay_interval = Some(u32v()?),
        "request-response-information" => p.request_response_information = Some(byte()?),
        "server-reference" => p.server_reference = Some(value.into()),
        "reason-string" => p.reason_string = Some(value.into()),
        "receive-maximum" => p.receive_maximum = Some(u16v()?.max(1)),
        "topic-alias-maximum" => p.topic_alias_maximum = Some(u16v()?),
        "topic-alias" => p.topic_alias = Some(u16v()?),
        "maximum-packet-size" => p.maximum_packet_size = Some(u32v()?.max(1)),
        _ => return Err(invalid(name)),
    }
    Ok(())
}

fn invalid(name: &str) -> String {
    format!("Error: Invalid value for {name} in --property argument.\n")
}

/// C's `atoi`: optional sign and leading digits; anything else gives 0. Mosquitto's
/// tools parse numbers this way, so `-q x` means QoS 0 there too.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<PropertySets, String> {
        let args: Vec<String> = line.split(' ').map(String::from).collect();
        let mut sets = PropertySets::default();
        let mut i = 0;
        parse_property(&args, &mut i, &mut sets)?;
        assert_eq!(i + 1, args.len(), "consumed every argument");
        Ok(sets)
    }

    #[test]
    fn user_property_takes_two_values() {
        let sets = parse("publish user-property key value").unwrap();
        assert_eq!(
            sets.publish.user_properties,
            vec![("key".into(), "value".into())]
        );
    }

    #[test]
    fn numeric_and_string_properties() {
        assert_eq!(
            parse("publish message-expiry-interval 30")
                .unwrap()
                .publish
                .message_expiry_interval,
            Some(30)
        );
        assert_eq!(
            parse("connect session-expiry-interval 60")
                .unwrap()
                .connect
                .session_expiry_interval,
            Some(60)
        );
        let sets = parse("will content-type text/plain").unwrap();
        assert_eq!(sets.will.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn errors_use_mosquittos_wording() {
        let e = parse("publish bogus 1").unwrap_err();
        assert!(e.contains("Invalid property name"), "{e}");
        let e = parse("bogus topic-alias 1").unwrap_err();
        assert!(e.contains("Invalid command"), "{e}");
        let e = parse("connect topic-alias 3").unwrap_err();
        assert_eq!(
            e,
            "Error: topic-alias property not allowed for connect in --property argument.\n"
        );
        let e = parse("publish user-property a").unwrap_err();
        assert!(e.contains("not enough arguments"), "{e}");
    }

    #[test]
    fn atoi_is_lenient_like_c() {
        assert_eq!(atoi("12abc"), 12);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("-1"), -1);
        assert_eq!(atoi(" 7"), 7);
    }
}
