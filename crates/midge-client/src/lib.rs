//! Async MQTT client (stub: to be written).
