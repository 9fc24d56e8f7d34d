//! How `midge sub` and `midge rr` print a message: plain, `-v`, `-F` format strings (with
//! Mosquitto's `%` and `@` specifiers and `\` escapes), and `--json`.
//!
//! Times are printed in UTC (`+0000`): Mosquitto uses the local time zone.

use super::args::Config;
use midge_client::{Message, Properties};
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends the output for `message` to `out`.
pub fn render(cfg: &Config, message: &Message, out: &mut Vec<u8>) {
    let now = Clock::now();
    if let Some(format) = &cfg.format {
        formatted(cfg, format, message, &now, out);
        if cfg.eol {
            out.push(b'\n');
        }
    } else if cfg.json {
        json_line(message, out);
        out.push(b'\n');
    } else if cfg.verbose {
        if message.payload.is_empty() {
            if cfg.eol {
                out.extend_from_slice(format!("{} (null)\n", message.topic).as_bytes());
            }
        } else {
            out.extend_from_slice(message.topic.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&message.payload);
            if cfg.eol {
                out.push(b'\n');
            }
        }
    } else if !message.payload.is_empty() {
        out.extend_from_slice(&message.payload);
        if cfg.eol {
            out.push(b'\n');
        }
    }
}

/// One field's `%-08.3` modifiers.
#[derive(Default, Clone, Copy)]
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

impl Spec {
    fn pad(&self, s: &[u8], out: &mut Vec<u8>) {
        let s = match self.precision {
            Some(p) if p < s.len() => &s[..p],
            _ => s,
        };
        let fill = self.width.saturating_sub(s.len());
        if self.left {
            out.extend_from_slice(s);
            out.extend(std::iter::repeat_n(b' ', fill));
        } else {
            out.extend(std::iter::repeat_n(
                if self.zero { b'0' } else { b' ' },
                fill,
            ));
            out.extend_from_slice(s);
        }
    }

    fn int(&self, v: impl std::fmt::Display, out: &mut Vec<u8>) {
        let spec = Spec {
            precision: None,
            zero: self.zero && !self.left,
            ..*self
        };
        spec.pad(v.to_string().as_bytes(), out);
    }

    fn blank(&self, out: &mut Vec<u8>) {
        let c = if self.zero { b'0' } else { b' ' };
        out.extend(std::iter::repeat_n(c, self.width));
    }

    /// Payload: Mosquitto truncates it to the field width when one is given.
    fn payload(&self, payload: &[u8], hex: Option<bool>, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let data = if self.width > 0 && payload.len() > self.width {
            &payload[..if hex.is_some() {
                self.width / 2
            } else {
                self.width
            }]
        } else {
            payload
        };
        match hex {
            None => body.extend_from_slice(data),
            Some(upper) => {
                for b in data {
                    let s = if upper {
                        format!("{b:02X}")
                    } else {
                        format!("{b:02x}")
                    };
                    body.extend_from_slice(s.as_bytes());
                }
            }
        }
        Spec {
            precision: None,
            ..*self
        }
        .pad(&body, out);
    }
}

fn formatted(cfg: &Config, format: &str, m: &Message, now: &Clock, out: &mut Vec<u8>) {
    let b = format.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 1 < b.len() => {
                i += 1;
                let mut spec = Spec::default();
                if b[i] == b'-' {
                    spec.left = true;
                    i += 1;
                }
                if b.get(i) == Some(&b'0') {
                    spec.zero = true;
                    i += 1;
                }
                while i + 1 < b.len() && b[i].is_ascii_digit() {
                    spec.width = spec.width * 10 + usize::from(b[i] - b'0');
                    i += 1;
                }
                if b.get(i) == Some(&b'.') && i + 1 < b.len() {
                    i += 1;
                    let mut p = 0;
                    while i + 1 < b.len() && b[i].is_ascii_digit() {
                        p = p * 10 + usize::from(b[i] - b'0');
                        i += 1;
                    }
                    spec.precision = Some(p);
                }
                if let Some(&c) = b.get(i) {
                    percent(cfg, c, spec, m, now, out);
                }
            }
            b'@' if i + 1 < b.len() => {
                i += 1;
                match b[i] {
                    b'@' => out.push(b'@'),
                    b'N' => out.extend_from_slice(format!("{:09}", now.nanos).as_bytes()),
                    c => out.extend_from_slice(now.strftime(c).as_bytes()),
                }
            }
            b'\\' if i + 1 < b.len() => {
                i += 1;
                let c = match b[i] {
                    b'\\' => Some(b'\\'),
                    b'0' => Some(0),
                    b'a' => Some(7),
                    b'e' => Some(0x1b),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'v' => Some(0x0b),
                    _ => None,
                };
                out.extend(c);
            }
            c => out.push(c),
        }
        i += 1;
    }
}

fn percent(cfg: &Config, c: u8, spec: Spec, m: &Message, now: &Clock, out: &mut Vec<u8>) {
    let p = &m.properties;
    match c {
        b'%' => out.push(b'%'),
        b'A' => match p.topic_alias {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        b'C' => match &p.content_type {
            Some(v) => spec.pad(v.as_bytes(), out),
            None => Spec {
                zero: false,
                ..spec
            }
            .blank(out),
        },
        b'D' => out.extend(p.correlation_data.iter().flat_map(|d| d.iter().copied())),
        b'E' => match p.message_expiry_interval {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        b'F' => match p.payload_format_indicator {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        b'I' => spec.pad(now.iso8601().as_bytes(), out),
        b'j' => mosquitto_json(m, now, true, cfg.pretty, out),
        b'J' => mosquitto_json(m, now, false, cfg.pretty, out),
        b'l' => spec.int(m.payload.len(), out),
        // The tools do not see packet identifiers; QoS 0 messages have none anyway.
        b'm' => spec.int(0, out),
        b'P' => {
            let pairs: Vec<String> = p
                .user_properties
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            out.extend_from_slice(pairs.join(" ").as_bytes());
        }
        b'p' => spec.payload(&m.payload, None, out),
        b'q' => out.push(b'0' + m.qos.as_u8()),
        b'R' => {
            if let Some(v) = &p.response_topic {
                spec.pad(v.as_bytes(), out);
            }
        }
        b'r' => out.push(if m.retain { b'1' } else { b'0' }),
        b'S' => match p.subscription_identifiers.first() {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        b't' => spec.pad(m.topic.as_bytes(), out),
        b'U' => out.extend_from_slice(format!("{}.{:09}", now.secs, now.nanos).as_bytes()),
        b'x' => spec.payload(&m.payload, Some(false), out),
        b'X' => spec.payload(&m.payload, Some(true), out),
        _ => {}
    }
}

/// `%j` / `%J`: Mosquitto's JSON object (`%J` embeds a payload that is itself JSON).
fn mosquitto_json(m: &Message, now: &Clock, escaped: bool, pretty: bool, out: &mut Vec<u8>) {
    let (sep, indent) = if pretty { ("\n", "\t") } else { ("", "") };
    let mut fields = vec![
        format!("\"tst\":{}", json_str(&now.json_timestamp())),
        format!("\"topic\":{}", json_str(&m.topic)),
        format!("\"qos\":{}", m.qos.as_u8()),
        format!("\"retain\":{}", u8::from(m.retain)),
        format!("\"payloadlen\":{}", m.payload.len()),
    ];
    let props = properties_json(&m.properties);
    if props != "{}" {
        fields.push(format!("\"properties\":{props}"));
    }
    let payload = if escaped {
        json_str(&String::from_utf8_lossy(&m.payload))
    } else {
        String::from_utf8_lossy(&m.payload).into_owned()
    };
    fields.push(format!("\"payload\":{payload}"));
    let body: Vec<String> = fields.iter().map(|f| format!("{indent}{f}")).collect();
    out.extend_from_slice(format!("{{{sep}{}{sep}}}", body.join(&format!(",{sep}"))).as_bytes());
}

/// `--json`: one object per line with the topic, QoS, retain flag, properties and the
/// payload as UTF-8 text or, when it is not UTF-8, base64.
fn json_line(m: &Message, out: &mut Vec<u8>) {
    let (payload, encoding) = match std::str::from_utf8(&m.payload) {
        Ok(text) => (json_str(text), "utf-8"),
        Err(_) => (json_str(&base64(&m.payload)), "base64"),
    };
    let line = format!(
        "{{\"topic\":{},\"qos\":{},\"retain\":{},\"properties\":{},\"payload\":{payload},\"encoding\":\"{encoding}\"}}",
        json_str(&m.topic),
        m.qos.as_u8(),
        m.retain,
        properties_json(&m.properties),
    );
    out.extend_from_slice(line.as_bytes());
}

/// The PUBLISH properties a subscriber can see, named as in Mosquitto.
fn properties_json(p: &Properties) -> String {
    let mut fields = Vec::new();
    if let Some(v) = p.payload_format_indicator {
        fields.push(format!("\"payload-format-indicator\":{v}"));
    }
    if let Some(v) = p.message_expiry_interval {
        fields.push(format!("\"message-expiry-interval\":{v}"));
    }
    if let Some(v) = &p.content_type {
        fields.push(format!("\"content-type\":{}", json_str(v)));
    }
    if let Some(v) = &p.response_topic {
        fields.push(format!("\"response-topic\":{}", json_str(v)));
    }
    if let Some(v) = &p.correlation_data {
        match std::str::from_utf8(v) {
            Ok(text) => fields.push(format!("\"correlation-data\":{}", json_str(text))),
            Err(_) => fields.push(format!(
                "\"correlation-data-base64\":{}",
                json_str(&base64(v))
            )),
        }
    }
    if !p.subscription_identifiers.is_empty() {
        let ids: Vec<String> = p
            .subscription_identifiers
            .iter()
            .map(u32::to_string)
            .collect();
        fields.push(format!("\"subscription-identifiers\":[{}]", ids.join(",")));
    }
    if !p.user_properties.is_empty() {
        let pairs: Vec<String> = p
            .user_properties
            .iter()
            .map(|(k, v)| format!("[{},{}]", json_str(k), json_str(v)))
            .collect();
        fields.push(format!("\"user-properties\":[{}]", pairs.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Wall-clock time of one message, broken down in UTC.
struct Clock {
    secs: u64,
    nanos: u32,
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32,
    yday: u32,
}

impl Clock {
    fn now() -> Clock {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock::at(d.as_secs(), d.subsec_nanos())
    }

    fn at(secs: u64, nanos: u32) -> Clock {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUMULATIVE[(month - 1) as usize] + day - 1 + u32::from(leap && month > 2);
        Clock {
            secs,
            nanos,
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            weekday: ((days + 4).rem_euclid(7)) as u32,
            yday,
        }
    }

    fn iso8601(&self) -> String {
        format!("{}T{}+0000", self.strftime(b'F'), self.strftime(b'T'))
    }

    fn json_timestamp(&self) -> String {
        format!(
            "{}T{}.{:06}Z+0000",
            self.strftime(b'F'),
            self.strftime(b'T'),
            self.nanos / 1000
        )
    }

    /// One `strftime` conversion (`@Y`, `@H`, ...), as C's in the "C" locale.
    fn strftime(&self, c: u8) -> String {
        const DAYS: [&str; 7] = [
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
        ];
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        let month_name = MONTHS[(self.month - 1) as usize];
        let day_name = DAYS[self.weekday as usize];
        match c {
            b'Y' => self.year.to_string(),
            b'y' => format!("{:02}", self.year.rem_euclid(100)),
            b'C' => format!("{:02}", self.year.div_euclid(100)),
            b'm' => format!("{:02}", self.month),
            b'd' => format!("{:02}", self.day),
            b'e' => format!("{:2}", self.day),
            b'H' => format!("{:02}", self.hour),
            b'I' => format!("{:02}", (self.hour + 11) % 12 + 1),
            b'M' => format!("{:02}", self.minute),
            b'S' => format!("{:02}", self.second),
            b'p' => if self.hour < 12 { "AM" } else { "PM" }.into(),
            b'j' => format!("{:03}", self.yday + 1),
            b'a' => day_name[..3].into(),
            b'A' => day_name.into(),
            b'b' | b'h' => month_name[..3].into(),
            b'B' => month_name.into(),
            b'u' => (if self.weekday == 0 { 7 } else { self.weekday }).to_string(),
            b'w' => self.weekday.to_string(),
            b'F' => format!("{}-{:02}-{:02}", self.year, self.month, self.day),
            b'T' => format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second),
            b'R' => format!("{:02}:{:02}", self.hour, self.minute),
            b'D' => format!(
                "{:02}/{:02}/{:02}",
                self.month,
                self.day,
                self.year.rem_euclid(100)
            ),
            b's' => self.secs.to_string(),
            b'z' => "+0000".into(),
            b'Z' => "UTC".into(),
            b'n' => "\n".into(),
            b't' => "\t".into(),
            b'%' => "%".into(),
            other => format!("%{}", char::from(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args::{parse, Tool};
    use midge_client::QoS;

    fn cfg(flags: &str) -> Config {
        let args: Vec<String> = format!("-t x {flags}")
            .split_whitespace()
            .map(String::from)
            .collect();
        parse(Tool::Sub, &args).unwrap()
    }

    fn show(cfg: &Config, m: &Message) -> String {
        let mut out = Vec::new();
        render(cfg, m, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn message() -> Message {
        Message::new("sensors/1", "21.5")
            .qos(QoS::AtLeastOnce)
            .retain(true)
    }

    #[test]
    fn plain_verbose_and_no_eol() {
        assert_eq!(show(&cfg(""), &message()), "21.5\n");
        assert_eq!(show(&cfg("-v"), &message()), "sensors/1 21.5\n");
        assert_eq!(show(&cfg("-N"), &message()), "21.5");
        let empty = Message::new("t", "");
        assert_eq!(show(&cfg(""), &empty), "");
        assert_eq!(show(&cfg("-v"), &empty), "t (null)\n");
    }

    #[test]
    fn format_specifiers() {
        let out = show(&cfg("-F %t|%p|%q|%r|%l|%x|%X|%%|@@"), &message());
        assert_eq!(out, "sensors/1|21.5|1|1|4|32312e35|32312E35|%|@\n");
        let out = show(&cfg("-F %12t|%-12t|%05l|%.3t|%2p"), &message());
        assert_eq!(out, "   sensors/1|sensors/1   |00004|sen|21\n");
        assert_eq!(show(&cfg("-F a\\tb -N"), &message()), "a\tb");
    }

    #[test]
    fn properties_in_formats() {
        let mut m = message();
        m.properties.content_type = Some("text/plain".into());
        m.properties.user_properties = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
        m.properties.response_topic = Some("reply".into());
        m.properties.correlation_data = Some("c1".into());
        assert_eq!(
            show(&cfg("-F %C|%P|%R|%D"), &m),
            "text/plain|a:1 b:2|reply|c1\n"
        );
    }

    #[test]
    fn json_output_is_one_object_per_line() {
        let mut m = message();
        m.properties.user_properties = vec![("k".into(), "v\"".into())];
        assert_eq!(
            show(&cfg("--json"), &m),
            "{\"topic\":\"sensors/1\",\"qos\":1,\"retain\":true,\"properties\":{\"user-properties\":[[\"k\",\"v\\\"\"]]},\"payload\":\"21.5\",\"encoding\":\"utf-8\"}\n"
        );
        let binary = Message::new("b", vec![0xff, 0x00, 0x10]);
        assert!(
            show(&cfg("--json"), &binary).contains("\"payload\":\"/wAQ\",\"encoding\":\"base64\"")
        );
    }

    #[test]
    fn mosquitto_json_format() {
        let out = show(&cfg("-F %j"), &message());
        assert!(out.starts_with("{\"tst\":\""), "{out}");
        assert!(out.ends_with("\"topic\":\"sensors/1\",\"qos\":1,\"retain\":1,\"payloadlen\":4,\"payload\":\"21.5\"}\n"), "{out}");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn utc_calendar() {
        let c = Clock::at(951_782_400, 5); // 2000-02-29T00:00:00Z, a Tuesday
        assert_eq!(c.strftime(b'F'), "2000-02-29");
        assert_eq!(c.strftime(b'a'), "Tue");
        assert_eq!(c.strftime(b'j'), "060");
        let c = Clock::at(1_795_620_330, 0);
        assert_eq!(c.iso8601(), "2026-11-25T15:25:30+0000");
    }
}
