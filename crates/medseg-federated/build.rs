//! Generates the Rust types of Flower's Fleet API messages from
//! `proto/fleet.proto` (feature `flower`), with the protoc that the
//! `protoc-bin-vendored` crate carries: nothing to install.

fn main() {
    #[cfg(feature = "flower")]
    {
        println!("cargo:rerun-if-changed=proto/fleet.proto");
        let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
        std::env::set_var("PROTOC", protoc);
        prost_build::Config::new()
            .btree_map(["."])
            .compile_protos(&["proto/fleet.proto"], &["proto"])
            .expect("compiling proto/fleet.proto");
    }
}
