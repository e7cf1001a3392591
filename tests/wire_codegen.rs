//! Keeps the committed prost code honest: it is regenerated from `wire/*.proto`
//! with the pure-Rust `protox` compiler and must match byte for byte.
//! Run with `MESHWIRE_BLESS=1` to rewrite the committed file after editing a .proto.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "handshake.proto",
    "packet.proto",
    "kad.proto",
    "gossip.proto",
];
const GENERATED: &str = "src/wire/meshwire.v1.rs";

fn regenerate() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS, [root.join("wire")]).expect("wire/*.proto compile");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wire-codegen");
    std::fs::create_dir_all(&out).expect("create out dir");
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost-build");
    std::fs::read_to_string(out.join("meshwire.v1.rs")).expect("generated file")
}

#[test]
fn committed_prost_code_matches_wire_protos() {
    let fresh = regenerate();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GENERATED);
    if std::env::var_os("MESHWIRE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write generated code");
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("committed generated code");
    assert!(
        committed == fresh,
        "{GENERATED} is stale: rerun this test with MESHWIRE_BLESS=1 and commit the result"
    );
}
