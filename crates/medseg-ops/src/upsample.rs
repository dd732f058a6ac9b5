//! upsample ops (being written).
