//! conv_transpose ops (being written).
