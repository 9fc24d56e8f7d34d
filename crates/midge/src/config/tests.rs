//! Tests of configuration loading: both syntaxes, detection, defaults and every message shape.

use std::net::SocketAddr;
use std::time::Duration;

use super::mosquitto::{mosquitto_order, parse_duration};
use super::mosquitto_keys::{classify, Unsupported, SUPPORTED};
use super::*;

fn conf(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(Path::new("midge.conf"), text)
}

fn toml_file(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(Path::new("midge.toml"), text)
}

fn ok(result: Result<Loaded, ConfigError>) -> Loaded {
    match result {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the configuration to load, got:\n{e}"),
    }
}

/// The error lines (`file:line: key: message`) of a configuration that must not load.
fn errors(result: Result<Loaded, ConfigError>) -> Vec<String> {
    match result {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.config),
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("expected Invalid, got {e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn binds(config: &Config) -> Vec<SocketAddr> {
    config.listeners.iter().map(|l| l.bind).collect()
}

fn local_only(anonymous: bool) -> Vec<ListenerConfig> {
    ["127.0.0.1:1883", "[::1]:1883"]
        .into_iter()
        .map(|a| ListenerConfig {
            bind: addr(a),
            max_connections: None,
            allow_anonymous: anonymous,
            tls: None,
            security: None,
        })
        .collect()
}

// ----- format detection -----

#[test]
fn toml_content_is_detected_whatever_the_file_name() {
    let text = "sys_interval = 5\n";
    assert_eq!(detect(Path::new("midge.conf"), text), Format::Toml);
    assert_eq!(
        detect(Path::new("midge"), "[[listener]]\nport = 1883\n"),
        Format::Toml
    );
    assert_eq!(ok(conf(text)).format, Format::Toml);
}

#[test]
fn key_value_lines_are_detected_as_mosquitto_conf() {
    let text = "# comment\nlistener 1883\nallow_anonymous true\n";
    assert_eq!(detect(Path::new("mosquitto.conf"), text), Format::Mosquitto);
    // A value containing `=` does not make a mosquitto.conf line look like TOML.
    let text = "log_timestamp_format %Y-%m-%dT%H:%M:%S\nplugin_opt_x a=b\nlistener 1883\n";
    assert_eq!(detect(Path::new("m.conf"), text), Format::Mosquitto);
}

#[test]
fn an_empty_or_comment_only_file_is_mosquitto_conf_with_local_only_defaults() {
    for text in ["", "\n\n", "# nothing here\n   # indented\n"] {
        let loaded = ok(conf(text));
        assert_eq!(loaded.format, Format::Mosquitto);
        assert_eq!(loaded.config, Config::default());
    }
}

#[test]
fn a_toml_extension_forces_toml() {
    assert_eq!(detect(Path::new("x.toml"), "listener 1883\n"), Format::Toml);
    let errs = errors(toml_file("listener 1883\n"));
    assert!(errs[0].starts_with("midge.toml:1:"), "{errs:?}");
}

#[test]
fn a_mostly_toml_file_with_a_syntax_error_reports_the_toml_error() {
    let text = "sys_interval = 5\nmax_qos = 1\nmax_keepalive 60\n";
    assert_eq!(detect(Path::new("midge.conf"), text), Format::Toml);
    let errs = errors(conf(text));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("midge.conf:3:15: max_keepalive: "),
        "{errs:?}"
    );
}

// ----- TOML -----

#[test]
fn toml_sets_every_field() {
    let text = r#"
max_keepalive = 120
max_inflight_messages = 10
max_queued_messages = 500
max_queued_bytes = 1048576
queue_qos0_messages = true
message_size_limit = 65536
max_packet_size = 131072
sys_interval = 0
persistent_client_expiration = 86400
retain_available = false
max_qos = 1
max_topic_alias = 5
outgoing_topic_aliases = false
connect_timeout = 30
allow_zero_length_clientid = false
auto_id_prefix = "midge-"
max_connections = 1000

[[listener]]
port = 1883

[[listener]]
port = 8883
bind_address = "127.0.0.1"
max_connections = 50
allow_anonymous = true
"#;
    let loaded = ok(toml_file(text));
    assert_eq!(loaded.format, Format::Toml);
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.max_keepalive, 120);
    assert_eq!(c.max_inflight_messages, 10);
    assert_eq!(c.max_queued_messages, 500);
    assert_eq!(c.max_queued_bytes, 1_048_576);
    assert!(c.queue_qos0_messages);
    assert_eq!(c.message_size_limit, 65536);
    assert_eq!(c.max_packet_size, 131_072);
    assert_eq!(c.sys_interval, Duration::ZERO);
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(86400))
    );
    assert!(!c.retain_available);
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.max_topic_alias, 5);
    assert!(!c.outgoing_topic_aliases);
    assert_eq!(c.connect_timeout, Duration::from_secs(30));
    assert!(!c.allow_zero_length_clientid);
    assert_eq!(c.auto_id_prefix, "midge-");
    assert_eq!(c.max_connections, Some(1000));
    assert_eq!(
        c.listeners,
        vec![
            ListenerConfig {
                bind: addr("0.0.0.0:1883"),
                max_connections: None,
                allow_anonymous: false,
                tls: None,
                security: None,
            },
            ListenerConfig {
                bind: addr("[::]:1883"),
                max_connections: None,
                allow_anonymous: false,
                tls: None,
                security: None,
            },
            ListenerConfig {
                bind: addr("127.0.0.1:8883"),
                max_connections: Some(50),
                allow_anonymous: true,
                tls: None,
                security: None,
            },
        ]
    );
}

#[test]
fn toml_without_listeners_is_local_only_with_anonymous_access() {
    let loaded = ok(toml_file("sys_interval = 10\n"));
    // Midge's own format keeps state in ./midge-data unless told otherwise.
    let expected = Config {
        persistence: Some(midge_broker::Persistence {
            data_dir: PathBuf::from("midge-data"),
            durability: midge_broker::Durability::default(),
        }),
        ..Config::default()
    };
    assert_eq!(loaded.config, expected);
    assert_eq!(loaded.config.listeners, local_only(true));
}

#[test]
fn toml_zero_and_minus_one_mean_no_limit_and_no_expiry() {
    let text = "persistent_client_expiration = 0\nmax_connections = -1\n[[listener]]\nport = 1\nmax_connections = 0\n";
    let c = ok(toml_file(text)).config;
    assert_eq!(c.persistent_client_expiration, None);
    assert_eq!(c.max_connections, None);
    assert!(c.listeners.iter().all(|l| l.max_connections.is_none()));
}

#[test]
fn toml_port_zero_is_allowed_for_tests() {
    let c = ok(toml_file(
        "[[listener]]\nport = 0\nbind_address = \"127.0.0.1\"\n",
    ))
    .config;
    assert_eq!(binds(&c), vec![addr("127.0.0.1:0")]);
}

#[test]
fn toml_unknown_key_names_file_line_column_and_key() {
    let errs = errors(toml_file("max_qos = 1\nsys_intervall = 5\n"));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("midge.toml:2:1: sys_intervall: unknown field `sys_intervall`"),
        "{errs:?}"
    );
}

#[test]
fn toml_unknown_key_in_a_listener_names_the_table() {
    let errs = errors(toml_file("[[listener]]\nport = 1883\nprotocol = \"ws\"\n"));
    assert!(
        errs[0].starts_with("midge.toml:3:1: listener.protocol: unknown field `protocol`"),
        "{errs:?}"
    );
}

#[test]
fn toml_out_of_range_values_name_line_key_and_range() {
    let text = "max_qos = 3\nmax_inflight_messages = 70000\nmax_packet_size = 10\nmax_connections = -5\n[[listener]]\nport = 70000\n";
    let errs = errors(toml_file(text));
    assert_eq!(
        errs,
        vec![
            "midge.toml:6:8: listener.port: expected a number from 0 to 65535, got 70000",
            "midge.toml:2:25: max_inflight_messages: expected a number from 0 to 65535, got 70000",
            "midge.toml:3:19: max_packet_size: expected 0 (no limit) or a number from 20 to 268435460, got 10",
            "midge.toml:1:11: max_qos: expected a number from 0 to 2, got 3",
            "midge.toml:4:19: max_connections: expected a number of connections, or -1 for no limit, got -5",
        ]
    );
}

#[test]
fn toml_wrong_types_name_line_and_key() {
    let errs = errors(toml_file("retain_available = \"yes\"\n"));
    assert!(
        errs[0].starts_with("midge.toml:1:20: retain_available: invalid type"),
        "{errs:?}"
    );
    let errs = errors(toml_file("[[listener]]\nport = \"abc\"\n"));
    assert!(
        errs[0].starts_with("midge.toml:2:8: listener.port: invalid type"),
        "{errs:?}"
    );
}

#[test]
fn toml_missing_listener_port_is_an_error() {
    let errs = errors(toml_file("[[listener]]\nbind_address = \"127.0.0.1\"\n"));
    assert!(errs[0].contains("missing field `port`"), "{errs:?}");
    assert!(errs[0].starts_with("midge.toml:1:"), "{errs:?}");
}

#[test]
fn toml_syntax_error_names_its_line() {
    let errs = errors(toml_file("max_qos = 1\nsys_interval = = 3\n"));
    assert!(errs[0].starts_with("midge.toml:2:"), "{errs:?}");
    assert!(errs[0].contains("sys_interval"), "{errs:?}");
}

#[test]
fn toml_two_listeners_on_one_address_is_an_error() {
    let text = "[[listener]]\nport = 1883\n[[listener]]\nport = 1883\nbind_address = \"0.0.0.0\"\n";
    let errs = errors(toml_file(text));
    assert_eq!(
        errs,
        vec!["midge.toml:4:8: listener.port: 0.0.0.0:1883 is already used by another listener"]
    );
}

#[test]
fn toml_bad_bind_address_is_an_error_at_its_line() {
    let errs = errors(toml_file(
        "[[listener]]\nport = 1883\nbind_address = \"no such host.invalid\"\n",
    ));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("midge.toml:3:16: listener.bind_address: cannot resolve"),
        "{errs:?}"
    );
}

// ----- mosquitto.conf: supported keys -----

#[test]
fn mosquitto_every_global_key_is_read() {
    let text = "\
listener 1883
allow_anonymous true
max_keepalive 120
max_inflight_messages 10
max_queued_messages 500
max_queued_bytes 1048576
queue_qos0_messages true
message_size_limit 65536
max_packet_size 131072
sys_interval 0
persistent_client_expiration 2d
retain_available false
max_qos 1
max_topic_alias 5
allow_zero_length_clientid false
auto_id_prefix midge-
";
    let loaded = ok(conf(text));
    assert_eq!(loaded.format, Format::Mosquitto);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.max_keepalive, 120);
    assert_eq!(c.max_inflight_messages, 10);
    assert_eq!(c.max_queued_messages, 500);
    assert_eq!(c.max_queued_bytes, 1_048_576);
    assert!(c.queue_qos0_messages);
    assert_eq!(c.message_size_limit, 65536);
    assert_eq!(c.max_packet_size, 131_072);
    assert_eq!(c.sys_interval, Duration::ZERO);
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(2 * 86400))
    );
    assert!(!c.retain_available);
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.max_topic_alias, 5);
    assert!(!c.allow_zero_length_clientid);
    assert_eq!(c.auto_id_prefix, "midge-");
    assert!(c.listeners.iter().all(|l| l.allow_anonymous));
}

#[test]
fn mosquitto_defaults_match_midges() {
    let c = ok(conf("listener 1883\n")).config;
    let default = Config::default();
    assert_eq!(
        Config {
            listeners: default.listeners.clone(),
            ..c
        },
        default
    );
}

#[test]
fn mosquitto_listener_without_address_binds_all_interfaces_without_anonymous_access() {
    let c = ok(conf("listener 1883\n")).config;
    assert_eq!(binds(&c), vec![addr("0.0.0.0:1883"), addr("[::]:1883")]);
    assert!(c.listeners.iter().all(|l| !l.allow_anonymous));
}

#[test]
fn mosquitto_listener_with_address_binds_that_address() {
    let c = ok(conf("listener 8883 127.0.0.1\nlistener 1884 ::1\n")).config;
    assert_eq!(binds(&c), vec![addr("127.0.0.1:8883"), addr("[::1]:1884")]);
}

#[test]
fn mosquitto_listener_host_name_binds_its_addresses() {
    let c = ok(conf("listener 1883 localhost\n")).config;
    assert!(
        binds(&c).contains(&addr("127.0.0.1:1883")),
        "{:?}",
        binds(&c)
    );
}

#[test]
fn mosquitto_socket_domain_picks_one_family() {
    let c = ok(conf(
        "listener 1883\nsocket_domain ipv4\nlistener 1884\nsocket_domain ipv6\n",
    ))
    .config;
    assert_eq!(binds(&c), vec![addr("0.0.0.0:1883"), addr("[::]:1884")]);
}

#[test]
fn mosquitto_without_listeners_is_local_only_with_anonymous_access() {
    let c = ok(conf("sys_interval 5\n")).config;
    assert_eq!(c.listeners, local_only(true));
}

#[test]
fn mosquitto_local_only_honours_an_explicit_allow_anonymous_false() {
    // Mosquitto 2.0 ignores this (its local only mode always allows anonymous clients);
    // Midge keeps the stricter setting the file asks for.
    let c = ok(conf("allow_anonymous false\n")).config;
    assert_eq!(c.listeners, local_only(false));
}

#[test]
fn mosquitto_local_only_takes_default_listener_options() {
    let c = ok(conf("max_connections 10\nsocket_domain ipv4\n")).config;
    assert_eq!(
        c.listeners,
        vec![ListenerConfig {
            bind: addr("127.0.0.1:1883"),
            max_connections: Some(10),
            allow_anonymous: true,
            tls: None,
            security: None,
        }]
    );
}

#[test]
fn mosquitto_port_and_bind_address_make_the_default_listener() {
    let c = ok(conf("port 1884\n")).config;
    assert_eq!(binds(&c), vec![addr("0.0.0.0:1884"), addr("[::]:1884")]);
    let c = ok(conf("bind_address 127.0.0.1\n")).config;
    assert_eq!(binds(&c), vec![addr("127.0.0.1:1883")]);
    let c = ok(conf(
        "bind_address 127.0.0.1\nport 1884\nmax_connections 5\n",
    ))
    .config;
    assert_eq!(
        c.listeners,
        vec![ListenerConfig {
            bind: addr("127.0.0.1:1884"),
            max_connections: Some(5),
            allow_anonymous: false,
            tls: None,
            security: None,
        }]
    );
}

#[test]
fn mosquitto_default_listener_starts_after_the_listener_ones() {
    let c = ok(conf("port 1884\nlistener 1885 127.0.0.1\n")).config;
    assert_eq!(
        binds(&c),
        vec![
            addr("127.0.0.1:1885"),
            addr("0.0.0.0:1884"),
            addr("[::]:1884")
        ]
    );
}

#[test]
fn mosquitto_max_connections_is_per_listener() {
    let text = "listener 1883 127.0.0.1\nmax_connections 100\nlistener 1884 127.0.0.1\nmax_connections -1\nlistener 1885 127.0.0.1\nmax_connections 0\nlistener 1886 127.0.0.1\n";
    let c = ok(conf(text)).config;
    let limits: Vec<Option<usize>> = c.listeners.iter().map(|l| l.max_connections).collect();
    assert_eq!(limits, vec![Some(100), None, None, None]);
    assert_eq!(c.max_connections, None);
}

#[test]
fn mosquitto_allow_anonymous_is_global_without_per_listener_settings() {
    let text = "listener 1883 127.0.0.1\nlistener 1884 127.0.0.1\nallow_anonymous true\n";
    let c = ok(conf(text)).config;
    assert!(c.listeners.iter().all(|l| l.allow_anonymous));
}

#[test]
fn mosquitto_allow_anonymous_is_per_listener_with_per_listener_settings() {
    let text = "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\nlistener 1884 127.0.0.1\n";
    let c = ok(conf(text)).config;
    let anonymous: Vec<bool> = c.listeners.iter().map(|l| l.allow_anonymous).collect();
    assert_eq!(anonymous, vec![true, false]);
}

#[test]
fn mosquitto_per_listener_settings_must_come_before_security_options() {
    let errs = errors(conf(
        "allow_anonymous true\nper_listener_settings true\nlistener 1883\n",
    ));
    assert_eq!(
        errs,
        vec!["midge.conf:2: per_listener_settings: must be set before any other security option (as in Mosquitto)"]
    );
}

#[test]
fn mosquitto_per_listener_zero_length_clientid_and_prefix_apply_when_all_listeners_agree() {
    let text = "per_listener_settings true\nlistener 1883\nauto_id_prefix x-\nallow_zero_length_clientid false\n";
    let c = ok(conf(text)).config;
    assert_eq!(c.auto_id_prefix, "x-");
    assert!(!c.allow_zero_length_clientid);
}

#[test]
fn mosquitto_per_listener_password_and_acl_files() {
    let text = "per_listener_settings true\n\
        listener 1883 127.0.0.1\npassword_file /pw-a\nacl_file /acl-a\n\
        listener 1884 127.0.0.1\npassword_file /pw-b\n\
        listener 1885 127.0.0.1\n";
    let c = ok(conf(text)).config;
    let files: Vec<Option<midge_broker::ListenerSecurity>> =
        c.listeners.iter().map(|l| l.security.clone()).collect();
    let own = |pw: Option<&str>, acl: Option<&str>| {
        Some(midge_broker::ListenerSecurity {
            password_file: pw.map(PathBuf::from),
            acl_file: acl.map(PathBuf::from),
        })
    };
    assert_eq!(
        files,
        vec![
            own(Some("/pw-a"), Some("/acl-a")),
            own(Some("/pw-b"), None),
            own(None, None)
        ]
    );
    assert_eq!(c.password_file, None);
    assert_eq!(c.acl_file, None);

    // The same files on every listener stay broker-wide.
    let text = "per_listener_settings true\nlistener 1883 127.0.0.1\npassword_file /pw\n\
        listener 1884 127.0.0.1\npassword_file /pw\n";
    let c = ok(conf(text)).config;
    assert_eq!(c.password_file.as_deref(), Some(Path::new("/pw")));
    assert!(c.listeners.iter().all(|l| l.security.is_none()));
}

#[test]
fn toml_listener_with_its_own_password_and_acl_files() {
    let text = "password_file = \"/pw\"\n\
        [[listener]]\nport = 1883\nbind_address = \"127.0.0.1\"\n\
        [[listener]]\nport = 1884\nbind_address = \"127.0.0.1\"\nacl_file = \"/acl-b\"\n";
    let c = ok(toml_file(text)).config;
    assert_eq!(c.password_file.as_deref(), Some(Path::new("/pw")));
    assert_eq!(c.listeners[0].security, None);
    assert_eq!(
        c.listeners[1].security,
        Some(midge_broker::ListenerSecurity {
            password_file: None,
            acl_file: Some(PathBuf::from("/acl-b")),
        })
    );
}

#[test]
fn mosquitto_same_max_qos_on_every_listener_is_applied() {
    let text = "listener 1883 127.0.0.1\nmax_qos 1\nlistener 1884 127.0.0.1\nmax_qos 1\n";
    assert_eq!(ok(conf(text)).config.max_qos, 1);
}

#[test]
fn mosquitto_different_max_qos_per_listener_is_an_error() {
    let text = "listener 1883 127.0.0.1\nmax_qos 1\nlistener 1884 127.0.0.1\n";
    let errs = errors(conf(text));
    assert_eq!(
        errs,
        vec![
            "midge.conf:2: max_qos: Midge applies max_qos to every listener, but the listeners would get \
             different values (1 on the listener at midge.conf:1, 2 on the listener at midge.conf:3); \
             set the same value on every listener"
        ]
    );
}

#[test]
fn mosquitto_listener_option_before_any_listener_without_a_default_listener_is_an_error() {
    // Mosquitto 2.0 opens an extra listener on port 1883, all interfaces, for this.
    let errs = errors(conf("max_connections 5\nlistener 8883\n"));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "midge.conf:1: max_connections: is a listener option before any `listener` line"
        ),
        "{errs:?}"
    );
}

#[test]
fn mosquitto_two_listeners_on_one_address_is_an_error() {
    let errs = errors(conf("listener 1883\nlistener 1883 0.0.0.0\n"));
    assert_eq!(
        errs,
        vec![
            "midge.conf:2: listener: 0.0.0.0:1883 is already bound by the listener at midge.conf:1"
        ]
    );
}

#[test]
fn mosquitto_protocol_mqtt_is_accepted_and_websockets_is_an_error() {
    ok(conf("listener 1883\nprotocol mqtt\n"));
    let errs = errors(conf("listener 8080\nprotocol websockets\n"));
    assert!(
        errs[0].starts_with("midge.conf:2: protocol: websockets listeners are not supported yet"),
        "{errs:?}"
    );
}

#[test]
fn mosquitto_comments_blank_lines_and_crlf_are_accepted() {
    let text =
        "# top\r\n\r\n   # indented comment\r\nlistener 1883   # trailing\r\n\tmax_qos\t1\r\n";
    let c = ok(conf(text)).config;
    assert_eq!(c.max_qos, 1);
    assert_eq!(c.listeners.len(), 2);
}

// ----- mosquitto.conf: durations -----

#[test]
fn mosquitto_duration_units_are_hours_days_weeks_months_years() {
    let day = 86_400;
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * day)));
    assert_eq!(parse_duration("3w"), Ok(Duration::from_secs(21 * day)));
    // `m` is months (30 days) in Mosquitto, not minutes.
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(150 * day)));
    assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(365 * day)));
}

#[test]
fn mosquitto_bad_durations_are_errors() {
    for bad in ["0d", "5s", "10", "h", "-1h", "1.5d", "abc"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    let errs = errors(conf("persistent_client_expiration 5s\n"));
    assert_eq!(
        errs,
        vec![
            "midge.conf:1: persistent_client_expiration: expected a positive number followed by h (hours), \
             d (days), w (weeks), m (months of 30 days) or y (years of 365 days), got '5s'"
        ]
    );
}

// ----- mosquitto.conf: error shapes -----

#[test]
fn mosquitto_bad_number_names_file_line_key_and_value() {
    let text = format!("{}max_inflight_messages abc\n", "# c\n".repeat(11));
    assert_eq!(
        errors(conf(&text)),
        vec!["midge.conf:12: max_inflight_messages: expected a number from 0 to 65535, got 'abc'"]
    );
}

#[test]
fn mosquitto_reports_every_error_in_the_file() {
    let text = "max_qos 3\nretain_available yes\nmax_keepalive\nsys_interval 1 2\nlistener 0\nlistener http\nmax_packet_size 10\nmax_connections -2\nsocket_domain ipv5\nprotocol smtp\n";
    assert_eq!(
        errors(conf(text)),
        vec![
            "midge.conf:1: max_qos: expected a number from 0 to 2, got '3'",
            "midge.conf:2: retain_available: expected true or false, got 'yes'",
            "midge.conf:3: max_keepalive: missing value",
            "midge.conf:4: sys_interval: expected one value, got '1 2' (extra '2')",
            "midge.conf:5: listener: port 0 means a Unix socket in Mosquitto, which Midge does not support yet",
            "midge.conf:6: listener: expected a port from 1 to 65535, got 'http'",
            "midge.conf:7: max_packet_size: expected 0 (no limit) or a number from 20 to 268435460, got '10'",
            "midge.conf:8: max_connections: expected a number of connections, or -1 for no limit, got '-2'",
            "midge.conf:9: socket_domain: expected ipv4 or ipv6, got 'ipv5'",
            "midge.conf:10: protocol: expected mqtt or websockets, got 'smtp'",
        ]
    );
}

#[test]
fn mosquitto_unknown_key_is_an_error() {
    assert_eq!(
        errors(conf("listener 1883\nstore_clean_interval 10\n")),
        vec!["midge.conf:2: store_clean_interval: unknown option (not a Mosquitto 2.0 mosquitto.conf option)"]
    );
}

#[test]
fn errors_come_with_the_warnings_found_alongside() {
    match conf("log_type all\npsk_file /etc/psk\n") {
        Err(ConfigError::Invalid { problems, warnings }) => {
            assert_eq!(problems.len(), 1);
            assert_eq!(warnings.len(), 1);
            assert!(warnings[0].starts_with("midge.conf:1: log_type: ignored"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn password_and_acl_files_are_read_in_both_syntaxes() {
    let loaded = ok(conf(
        "listener 1883\npassword_file /etc/mosquitto/pw\nacl_file /etc/mosquitto/acl\n",
    ));
    assert_eq!(
        loaded.config.password_file.as_deref(),
        Some(Path::new("/etc/mosquitto/pw"))
    );
    assert_eq!(
        loaded.config.acl_file.as_deref(),
        Some(Path::new("/etc/mosquitto/acl"))
    );
    let loaded = ok(parse_str(
        Path::new("midge.toml"),
        "password_file = \"/pw\"\nacl_file = \"/acl\"\nscram_file = \"/scram\"\n",
    ));
    assert_eq!(
        loaded.config.password_file.as_deref(),
        Some(Path::new("/pw"))
    );
    assert_eq!(loaded.config.acl_file.as_deref(), Some(Path::new("/acl")));
    assert_eq!(
        loaded.config.scram_file.as_deref(),
        Some(Path::new("/scram"))
    );
}

// ----- mosquitto.conf: unsupported keys -----

#[test]
fn mosquitto_logging_and_tuning_keys_are_warnings() {
    let text = "log_dest stdout\nlog_type all\nconnection_messages true\nlog_timestamp false\npid_file /run/m.pid\nuser mosquitto\nautosave_interval 60\nset_tcp_nodelay true\nwebsockets_log_level 0\nmemory_limit 1000000\nretry_interval 20\n";
    let loaded = ok(conf(text));
    let keys: Vec<&str> = loaded
        .warnings
        .iter()
        .map(|w| w.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        vec![
            "log_dest",
            "log_type",
            "connection_messages",
            "log_timestamp",
            "pid_file",
            "user",
            "autosave_interval",
            "set_tcp_nodelay",
            "websockets_log_level",
            "memory_limit",
            "retry_interval"
        ]
    );
    assert_eq!(
        loaded.warnings[0],
        "midge.conf:1: log_dest: ignored: Midge's logging is not configured from this file yet"
    );
}

#[test]
fn persistence_in_toml() {
    let loaded = ok(toml_file(
        "data_dir = \"/var/lib/midge\"\nfsync = \"always\"\n",
    ));
    let p = loaded.config.persistence.expect("on by default");
    assert_eq!(p.data_dir, Path::new("/var/lib/midge"));
    assert_eq!(p.durability, midge_broker::Durability::Always);
    let loaded = ok(toml_file("fsync = 250\n"));
    assert_eq!(
        loaded.config.persistence.map(|p| p.durability),
        Some(midge_broker::Durability::Periodic(
            std::time::Duration::from_millis(250)
        ))
    );
    assert_eq!(
        ok(toml_file("persistence = false\n")).config.persistence,
        None
    );
    assert_eq!(errors(toml_file("fsync = \"sometimes\"\n")).len(), 1);
}

#[test]
fn park_idle_after_in_toml() {
    let c = ok(parse_str(Path::new("midge.toml"), "park_idle_after = 30\n")).config;
    assert_eq!(c.park_idle_after, Duration::from_secs(30));
    let c = ok(parse_str(Path::new("midge.toml"), "park_idle_after = 0\n")).config;
    assert!(c.park_idle_after.is_zero(), "0 turns parking off");
    let c = ok(parse_str(Path::new("midge.toml"), "")).config;
    assert_eq!(c.park_idle_after, Duration::from_secs(2), "the default");
    let errs = errors(parse_str(Path::new("midge.toml"), "park_idle_after = -1\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn limits_in_toml() {
    let loaded = ok(parse_str(
        Path::new("midge.toml"),
        "max_subscriptions_per_client = 100\nmax_topic_length = 256\nmax_topic_levels = 8\nmax_client_id_length = 64\nmax_connection_rate_per_ip = 50\nmax_inbound_message_rate = 1000\nauth_failures_before_delay = 0\n",
    ));
    let c = loaded.config;
    assert_eq!(
        (
            c.max_subscriptions_per_client,
            c.max_topic_length,
            c.max_topic_levels,
            c.max_client_id_length
        ),
        (100, 256, 8, 64)
    );
    assert_eq!(
        (
            c.max_connection_rate_per_ip,
            c.max_inbound_message_rate,
            c.auth_failures_before_delay
        ),
        (50, 1000, 0)
    );
    let errs = errors(parse_str(
        Path::new("midge.toml"),
        "max_client_id_length = 5\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn tls_listeners_in_both_syntaxes() {
    let text = "listener 8883 127.0.0.1\ncertfile /c.pem\nkeyfile /k.pem\ncafile /ca.pem\nrequire_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\nallow_anonymous true\n";
    let loaded = ok(conf(text));
    let tls = loaded.config.listeners[0]
        .tls
        .clone()
        .expect("TLS listener");
    assert_eq!(tls.certfile, Path::new("/c.pem"));
    assert_eq!(tls.keyfile, Path::new("/k.pem"));
    assert_eq!(tls.cafile.as_deref(), Some(Path::new("/ca.pem")));
    assert!(tls.require_certificate && tls.use_identity_as_username);
    assert_eq!(tls.min_version, midge_broker::TlsVersion::Tls13);
    let loaded = ok(parse_str(
        Path::new("midge.toml"),
        "[[listener]]\nport = 8883\nbind_address = \"127.0.0.1\"\ncertfile = \"/c.pem\"\nkeyfile = \"/k.pem\"\n",
    ));
    let tls = loaded.config.listeners[0]
        .tls
        .clone()
        .expect("TLS listener");
    assert_eq!(tls.min_version, midge_broker::TlsVersion::Tls12);
    assert!(!tls.require_certificate);
    // A certificate without its key is an error, naming the listener's line.
    let errs = errors(conf("listener 8883\ncertfile /c.pem\n"));
    assert_eq!(
        errs,
        vec!["midge.conf:1: listener: certfile and keyfile go together".to_string()]
    );
    // TLS options without a certificate are an error at the listener.
    let errs = errors(conf("listener 8883\ncafile /ca.pem\n"));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("midge.conf:1: listener: TLS options"),
        "{errs:?}"
    );
    // `ciphers` and `ciphers_tls1.3` are kept for the listener (checked when it starts).
    let loaded = ok(conf(
        "listener 8883\ncertfile /c.pem\nkeyfile /k.pem\nciphers ECDHE-RSA-AES256-GCM-SHA384\n\
         ciphers_tls1.3 TLS_AES_256_GCM_SHA384\n",
    ));
    let tls = loaded.config.listeners[0].tls.clone().expect("tls");
    assert_eq!(tls.ciphers.as_deref(), Some("ECDHE-RSA-AES256-GCM-SHA384"));
    assert_eq!(tls.ciphers_tls13.as_deref(), Some("TLS_AES_256_GCM_SHA384"));
    let loaded = ok(toml_file(
        "[[listener]]\nport = 8883\ncertfile = \"/c.pem\"\nkeyfile = \"/k.pem\"\n\
         ciphers = \"ECDHE-ECDSA-CHACHA20-POLY1305\"\nciphers_tls13 = \"TLS_CHACHA20_POLY1305_SHA256\"\n",
    ));
    let tls = loaded.config.listeners[0].tls.clone().expect("tls");
    assert_eq!(
        tls.ciphers.as_deref(),
        Some("ECDHE-ECDSA-CHACHA20-POLY1305")
    );
    assert_eq!(
        tls.ciphers_tls13.as_deref(),
        Some("TLS_CHACHA20_POLY1305_SHA256")
    );
}

#[test]
fn mosquitto_security_and_durability_keys_are_errors() {
    let keys = [
        "psk_file /etc/mosquitto/psk",
        "psk_hint hint",
        "use_subject_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.1",
        "plugin /usr/lib/dynsec.so",
        "plugin_opt_config_file /x.json",
        "auth_plugin /x.so",
        "auth_opt_db x",
        "mount_point tenant/",
        "bind_interface eth0",
        "clientid_prefixes secure-",
        "upgrade_outgoing_qos true",
    ];
    for line in keys {
        let key = line.split(' ').next().unwrap_or_default();
        let errs = errors(conf(&format!("listener 1883\n{line}\n")));
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        assert!(
            errs[0].starts_with(&format!("midge.conf:2: {key}: ")),
            "{errs:?}"
        );
    }
}

#[test]
fn mosquitto_security_keys_set_to_midges_behaviour_are_accepted() {
    let text = "listener 1883\npersistence false\nrequire_certificate false\nuse_identity_as_username false\nuse_username_as_clientid false\nupgrade_outgoing_qos false\n";
    let loaded = ok(conf(text));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn mosquitto_a_bridge_is_one_error_at_its_connection_line() {
    let text = "listener 1883\nconnection upstream\naddress broker.example:1883\ntopic # both 0\nremote_username u\n";
    let errs = errors(conf(text));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("midge.conf:2: connection: bridges are not supported yet"));
}

#[test]
fn mosquitto_bridge_option_outside_a_bridge_is_an_error() {
    let errs = errors(conf("listener 1883\ntopic a/b\n"));
    assert!(
        errs[0].starts_with("midge.conf:2: topic: is a bridge option"),
        "{errs:?}"
    );
}

/// Every option of mosquitto.conf(5) for Mosquitto 2.0 (2.0.11's manual page), plus the
/// 2.0 plugin names and the bridge's old `clientid`/`username`/`password`.
const MOSQUITTO_2_0_KEYS: &[&str] = &[
    "acl_file",
    "address",
    "addresses",
    "allow_anonymous",
    "allow_duplicate_messages",
    "allow_zero_length_clientid",
    "auth_opt_x",
    "auth_plugin",
    "auth_plugin_deny_special_chars",
    "auto_id_prefix",
    "autosave_interval",
    "autosave_on_changes",
    "bind_address",
    "bind_interface",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "cafile",
    "capath",
    "certfile",
    "check_retain_source",
    "ciphers",
    "ciphers_tls1.3",
    "cleansession",
    "clientid",
    "clientid_prefixes",
    "connection",
    "connection_messages",
    "crlfile",
    "dhparamfile",
    "http_dir",
    "idle_timeout",
    "include_dir",
    "keepalive_interval",
    "keyfile",
    "listener",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "log_dest",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "log_type",
    "max_connections",
    "max_inflight_bytes",
    "max_inflight_messages",
    "max_keepalive",
    "max_packet_size",
    "max_qos",
    "max_queued_bytes",
    "max_queued_messages",
    "max_topic_alias",
    "memory_limit",
    "message_size_limit",
    "mount_point",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "password",
    "password_file",
    "per_listener_settings",
    "persistence",
    "persistence_file",
    "persistence_location",
    "persistent_client_expiration",
    "pid_file",
    "plugin",
    "plugin_opt_x",
    "port",
    "protocol",
    "psk_file",
    "psk_hint",
    "queue_qos0_messages",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "require_certificate",
    "restart_timeout",
    "retain_available",
    "retry_interval",
    "round_robin",
    "set_tcp_nodelay",
    "socket_domain",
    "start_type",
    "sys_interval",
    "threshold",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "topic",
    "try_private",
    "upgrade_outgoing_qos",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
    "user",
    "username",
    "websockets_headers_size",
    "websockets_log_level",
];

#[test]
fn every_mosquitto_2_0_option_is_supported_or_classified() {
    for key in MOSQUITTO_2_0_KEYS {
        let supported = SUPPORTED.contains(key);
        let classified = classify(key).is_some();
        assert!(
            supported != classified,
            "{key}: supported={supported} classified={classified}"
        );
    }
    for key in SUPPORTED {
        assert!(
            MOSQUITTO_2_0_KEYS.contains(key),
            "{key} is not a Mosquitto option"
        );
    }
    assert_eq!(
        classify("log_dest"),
        Some(Unsupported::Warn(classify_reason("log_dest")))
    );
}

fn classify_reason(key: &str) -> &'static str {
    match classify(key) {
        Some(Unsupported::Warn(why)) => why,
        _ => "",
    }
}

// ----- include_dir -----

#[test]
fn include_dir_loads_conf_files_in_mosquittos_order() {
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    // Each file sets sys_interval; the last one loaded wins, and each adds a listener.
    for (i, name) in ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"]
        .iter()
        .enumerate()
    {
        let text = format!("sys_interval {}\nlistener {} 127.0.0.1\n", i + 1, 2000 + i);
        std::fs::write(conf_d.join(name), text).unwrap();
    }
    std::fs::write(conf_d.join("README"), "not a conf file\n").unwrap();
    std::fs::write(conf_d.join("x.conf.bak"), "garbage\n").unwrap();
    let main = dir.path().join("mosquitto.conf");
    std::fs::write(&main, "allow_anonymous true\ninclude_dir conf.d\n").unwrap();

    let c = ok(load(&main)).config;
    // Order: 00, 01, A, a, B, b -> the listeners' ports in that order.
    let ports: Vec<u16> = c.listeners.iter().map(|l| l.bind.port()).collect();
    assert_eq!(ports, vec![2005, 2002, 2001, 2003, 2004, 2000]);
    assert_eq!(c.sys_interval, Duration::from_secs(1));
    assert!(c.listeners.iter().all(|l| l.allow_anonymous));
}

#[test]
fn include_dir_problems_name_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("extra.conf"), "# c\nmax_qos 7\n").unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, format!("include_dir {}\n", sub.display())).unwrap();
    let errs = errors(load(&main));
    let extra = sub.join("extra.conf");
    assert_eq!(
        errs,
        vec![format!(
            "{}:2: max_qos: expected a number from 0 to 2, got '7'",
            extra.display()
        )]
    );
}

#[test]
fn include_dir_must_not_contain_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "include_dir .\n").unwrap();
    let errs = errors(load(&main));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0]
        .ends_with("include_dir: the directory must not contain the main configuration file"));
}

#[test]
fn include_dir_must_exist() {
    let errs = errors(conf("include_dir /nonexistent/midge/conf.d\n"));
    assert!(
        errs[0].starts_with(
            "midge.conf:1: include_dir: cannot read directory /nonexistent/midge/conf.d"
        ),
        "{errs:?}"
    );
}

#[test]
fn include_dir_order_matches_the_manual_example() {
    let mut names = vec!["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"];
    names.sort_by(|a, b| mosquitto_order(a, b));
    assert_eq!(
        names,
        vec!["00.conf", "01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]
    );
}

// ----- Debian's /etc/mosquitto/mosquitto.conf -----

/// The file Debian's `mosquitto` 2.0.11 package installs as /etc/mosquitto/mosquitto.conf.
const DEBIAN_MOSQUITTO_CONF: &str = "\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
";

/// Writes Debian's file with its `include_dir` pointing at a copy of its empty conf.d.
fn debian(persistence: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("README"),
        "Any files placed in this directory that have a .conf ending will be loaded as\nconfig files by the broker. Use this to make your local config.\n",
    )
    .unwrap();
    let text = DEBIAN_MOSQUITTO_CONF
        .replace("/etc/mosquitto/conf.d", &conf_d.display().to_string())
        .replace("persistence true", persistence);
    let main = dir.path().join("mosquitto.conf");
    std::fs::write(&main, text).unwrap();
    (dir, main)
}

#[test]
fn debian_mosquitto_conf_with_persistence_keeps_state_in_persistence_location() {
    let (_dir, main) = debian("persistence true");
    let loaded = ok(load(&main));
    let p = loaded.config.persistence.expect("persistence on");
    assert_eq!(p.data_dir, Path::new("/var/lib/mosquitto/midge-data"));
    let m = main.display().to_string();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.replace(&m, "F")).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("F:6: pid_file: ignored"));
    assert!(warnings[1].starts_with("F:11: log_dest: ignored"));
}

#[test]
fn debian_mosquitto_conf_without_persistence_loads_local_only_with_warnings() {
    let (_dir, main) = debian("persistence false");
    let loaded = ok(load(&main));
    assert_eq!(loaded.format, Format::Mosquitto);
    assert_eq!(loaded.config.persistence, None);
    assert_eq!(loaded.config.listeners, local_only(true));
    let m = main.display().to_string();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.replace(&m, "F")).collect();
    assert_eq!(
        warnings,
        vec![
            "F:6: pid_file: ignored: Midge writes no pid file; let the service manager track the process",
            "F:11: log_dest: ignored: Midge's logging is not configured from this file yet",
        ]
    );
}

// ----- load() -----

#[test]
fn load_reports_an_unreadable_file_by_path() {
    let err = load(Path::new("/nonexistent/midge.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/midge.toml: cannot read the configuration file"));
}

#[test]
fn load_reads_a_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("midge.toml");
    std::fs::write(&path, "[[listener]]\nport = 1883\nallow_anonymous = true\n").unwrap();
    let loaded = ok(load(&path));
    assert_eq!(loaded.format, Format::Toml);
    assert!(loaded.config.listeners.iter().all(|l| l.allow_anonymous));
}

// ----- slow consumers and shutdown (both syntaxes) -----

#[test]
fn slow_consumer_and_shutdown_keys_are_read_in_both_syntaxes() {
    let toml = "slow_consumer_timeout = 30\npublisher_backpressure = true\n\
                publisher_backpressure_max_ms = 250\nshutdown_timeout = 9\n";
    let mosquitto = "listener 1883\nslow_consumer_timeout 30\npublisher_backpressure true\n\
                     publisher_backpressure_max_ms 250\nshutdown_timeout 9\n";
    for loaded in [ok(toml_file(toml)), ok(conf(mosquitto))] {
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.slow_consumer_timeout, Duration::from_secs(30));
        assert!(c.publisher_backpressure);
        assert_eq!(c.publisher_backpressure_max, Duration::from_millis(250));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(9));
    }
}

#[test]
fn slow_consumer_defaults_never_hold_a_publisher() {
    let c = Config::default();
    assert!(!c.publisher_backpressure);
    assert_eq!(c.slow_consumer_timeout, Duration::from_secs(60));
    assert_eq!(c.max_queued_messages, 1000);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
}

#[test]
fn slow_consumer_keys_out_of_range_are_errors_at_their_line() {
    let errs = errors(conf(
        "listener 1883\npublisher_backpressure_max_ms 0\nshutdown_timeout 0\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("midge.conf:2:"), "{errs:?}");
    assert!(errs[1].starts_with("midge.conf:3:"), "{errs:?}");
    let errs = errors(toml_file("slow_consumer_timeout = -1\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("slow_consumer_timeout"), "{errs:?}");
}
