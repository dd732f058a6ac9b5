//! conv ops (being written).
