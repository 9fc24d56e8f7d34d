//! Retained messages (stub).
