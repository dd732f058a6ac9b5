//! pool ops (being written).
