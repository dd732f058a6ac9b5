//! softmax ops (being written).
