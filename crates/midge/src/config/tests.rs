//! Tests of configuration loading: both syntaxes, detection, defaults and every message shape.

use super::*;

fn conf(text: &str) -> Result<Loaded, ConfigError> {
    parse_str(Path::new("midge.conf"), text)
}

#[test]
fn smoke() {
    let loaded = conf("listener 1883\nallow_anonymous true\nlog_dest stdout\n").unwrap();
    assert_eq!(loaded.format, Format::Mosquitto);
    assert_eq!(loaded.config.listeners.len(), 2);
    assert_eq!(super::mosquitto_keys::SUPPORTED.len(), 23);
    println!("{:?}", loaded.warnings);
}
