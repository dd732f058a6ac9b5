//! activation ops (being written).
