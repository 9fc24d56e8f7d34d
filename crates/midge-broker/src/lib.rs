//! The Midge MQTT broker as a library: listeners, connections, sessions, routing,
//! retained messages, wills and `$SYS` statistics. Embeddable in tests.
