//! Compiles the CRI v1 subset in proto/cri.proto with protox (pure Rust, no protoc needed).

fn main() {
    println!("cargo:rerun-if-changed=proto/cri.proto");
    let fds = protox::compile(["proto/cri.proto"], ["proto"]).expect("proto/cri.proto compiles");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost code generation");
}
