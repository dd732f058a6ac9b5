//! Semi-supervised learners (being written).
