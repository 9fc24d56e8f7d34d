//! Every `mosquitto.conf` option of Mosquitto 2.0, and what Midge does with it.
//!
//! The list follows mosquitto.conf(5) of Mosquitto 2.0 (plus `plugin`/`plugin_opt_*`, the 2.0
//! names of `auth_plugin`/`auth_opt_*`, and `retry_interval`, which 2.0 still accepts with a
//! warning). A key in neither list is not a Mosquitto 2.0 option, and loading it is an error.

/// Options Midge reads and honours (see `docs/configuration.md`); the tests check that
/// every Mosquitto 2.0 option is here or classified below.
#[cfg(test)]
pub(super) const SUPPORTED: &[&str] = &[
    "allow_anonymous",
    "allow_zero_length_clientid",
    "acl_file",
    "auto_id_prefix",
    "bind_address",
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "keyfile",
    "require_certificate",
    "tls_version",
    "use_identity_as_username",
    "include_dir",
    "listener",
    "max_connections",
    "max_inflight_messages",
    "max_keepalive",
    "max_packet_size",
    "max_qos",
    "max_queued_bytes",
    "max_queued_messages",
    "max_topic_alias",
    "message_size_limit",
    "password_file",
    "per_listener_settings",
    "persistence",
    "persistence_location",
    "persistent_client_expiration",
    "port",
    "queue_qos0_messages",
    "retain_available",
    "socket_domain",
    "sys_interval",
    // `protocol mqtt` only; `protocol websockets` is an error.
    "protocol",
];

/// What loading an option Midge does not support yet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unsupported {
    /// The option only tunes or logs: a warning, and the broker starts.
    Warn(&'static str),
    /// Ignoring the option would leave the broker less secure or less durable than
    /// configured: an error, and the broker does not start.
    Error(&'static str),
    /// An error unless the value is the given one, which is how Midge behaves anyway.
    ErrorUnless(&'static str, &'static str),
    /// An option of a bridge (`connection` section): an error, as bridges are not supported.
    Bridge,
}

const LOGGING: &str = "Midge's logging is not configured from this file yet";
const TLS: &str = "TLS is not supported yet; ignoring this option would accept unencrypted or \
                   unauthenticated connections where TLS was configured";
const AUTH: &str = "authentication and access control are not supported yet; ignoring this \
                    option would let clients in that it keeps out";
const WEBSOCKETS: &str = "only used by websockets listeners, which Midge does not support yet";

/// How Midge treats `key`, if it is a Mosquitto 2.0 option Midge does not support yet.
pub(super) fn classify(key: &str) -> Option<Unsupported> {
    use Unsupported::*;
    if key.starts_with("auth_opt_") || key.starts_with("plugin_opt_") {
        return Some(Error(AUTH));
    }
    Some(match key {
        "log_dest"
        | "log_facility"
        | "log_timestamp"
        | "log_timestamp_format"
        | "log_type"
        | "connection_messages" => Warn(LOGGING),
        "websockets_log_level" | "websockets_headers_size" | "http_dir" => Warn(WEBSOCKETS),
        "pid_file" => Warn("Midge writes no pid file; let the service manager track the process"),
        "user" => Warn("Midge does not switch user; start it as the user it should run as"),
        "autosave_interval" | "autosave_on_changes" => {
            Warn("unneeded: Midge writes every change to its store as it happens")
        }
        "persistence_file" => {
            Warn("Midge keeps a directory (`midge-data` in persistence_location), not one file")
        }
        "set_tcp_nodelay" => Warn("Midge does not set TCP_NODELAY from this file yet"),
        "max_inflight_bytes" => Warn("not supported yet; max_inflight_messages still applies"),
        "memory_limit" => Warn(
            "Midge has no heap limit; bound memory with max_queued_messages, max_queued_bytes \
             and message_size_limit",
        ),
        "allow_duplicate_messages" => Warn(
            "deprecated in Mosquitto 2.0; Midge's handling of overlapping subscriptions is fixed",
        ),
        "check_retain_source" => {
            Warn("not supported yet: retained messages are checked against the receiver's ACL only")
        }
        "retry_interval" => Warn("removed in Mosquitto 2.0, which ignores it too"),

        "psk_file" | "auth_plugin" | "plugin" | "auth_plugin_deny_special_chars" => Error(AUTH),
        "clientid_prefixes" => Error(
            "not supported yet; ignoring it would let clients connect whose client ID it refuses",
        ),
        "mount_point" => Error(
            "not supported yet; ignoring it would let this listener's clients see every topic",
        ),
        "bind_interface" => {
            Error("not supported yet; ignoring it would listen on more interfaces than configured")
        }
        "crlfile"
        | "dhparamfile"
        | "tls_engine"
        | "tls_engine_kpass_sha1"
        | "tls_keyform"
        | "psk_hint" => Error(TLS),
        "use_subject_as_username" => ErrorUnless("false", TLS),
        "use_username_as_clientid" => ErrorUnless(
            "false",
            "not supported yet; ignoring it would let a client take over another user's client ID",
        ),
        "upgrade_outgoing_qos" => ErrorUnless(
            "false",
            "not supported yet; ignoring it would deliver messages at a lower QoS than configured",
        ),

        "address"
        | "addresses"
        | "bridge_alpn"
        | "bridge_attempt_unsubscribe"
        | "bridge_bind_address"
        | "bridge_cafile"
        | "bridge_capath"
        | "bridge_certfile"
        | "bridge_identity"
        | "bridge_insecure"
        | "bridge_keyfile"
        | "bridge_max_packet_size"
        | "bridge_outgoing_retain"
        | "bridge_protocol_version"
        | "bridge_psk"
        | "bridge_require_ocsp"
        | "bridge_tls_version"
        | "cleansession"
        | "clientid"
        | "connection"
        | "idle_timeout"
        | "keepalive_interval"
        | "local_clientid"
        | "local_cleansession"
        | "local_password"
        | "local_username"
        | "notifications"
        | "notifications_local_only"
        | "notification_topic"
        | "password"
        | "remote_clientid"
        | "remote_password"
        | "remote_username"
        | "restart_timeout"
        | "round_robin"
        | "start_type"
        | "threshold"
        | "topic"
        | "try_private"
        | "username" => Bridge,
        _ => return None,
    })
}

/// The message for a bridge, reported once at its `connection` line.
pub(super) const BRIDGE: &str = "bridges are not supported yet; ignoring this bridge would stop \
                                 messages it forwards";
