//! The extending examples (`examples/`, shown in `docs/extending.md`) run as
//! tests: each registers its own network, loss, transform or semi-supervised
//! method and trains it for a few iterations through `TrainerBuilder`.

// each example is a whole program with its own copy of `examples/common`
#![allow(clippy::duplicate_mod)]

#[path = "../examples/custom_loss.rs"]
mod custom_loss;
#[path = "../examples/custom_network.rs"]
mod custom_network;
#[path = "../examples/custom_semi_method.rs"]
mod custom_semi_method;
#[path = "../examples/custom_transform.rs"]
mod custom_transform;

#[test]
fn a_registered_network_trains() {
    custom_network::main().unwrap();
}

#[test]
fn a_registered_loss_trains() {
    custom_loss::main().unwrap();
}

#[test]
fn a_registered_transform_runs_in_the_training_pipeline() {
    custom_transform::main().unwrap();
}

#[test]
fn a_registered_semi_method_trains_and_checks_its_parameters() {
    custom_semi_method::main().unwrap();
    let e = custom_semi_method::misspelt_parameter_error().unwrap();
    assert!(
        e.contains("treshold") && e.contains("threshold") && e.contains("PseudoLabel"),
        "{e}"
    );
}
