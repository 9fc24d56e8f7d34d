//! Topic names and topic filters: validation and matching (stub: to be written).
