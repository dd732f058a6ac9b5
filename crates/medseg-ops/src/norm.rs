//! norm ops (being written).
