//! `examples/partitions.rs`: three partitions of ten nodes, each its own overlay;
//! routers reach "a node of partition X" with a message and a request through the
//! DHT, and fall back past the provider they chose first once it is killed.

use std::process::Command;

#[test]
fn every_route_succeeds_and_the_fallback_past_a_dead_provider_is_taken() {
    // `cargo test` builds the examples next to the test binaries.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("partitions{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(bin).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every route succeeded"), "{stdout}");
    assert!(
        stdout.contains("fallback past partition 1 node"),
        "{stdout}"
    );
    assert!(stdout.contains("nodes of other partitions in any overlay: 0"));
}
