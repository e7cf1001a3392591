//! `examples/consensus.rs`: seven validators on the consensus API (reactors, a
//! high-priority vote channel, block parts, deferred gossip validation, a bulk
//! transfer beside them) commit every round.

use std::process::Command;

#[test]
fn the_consensus_example_commits_every_round_with_and_without_bulk_traffic() {
    // `cargo test` builds the examples next to the test binaries.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("consensus{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(bin)
        .args(["--validators", "7", "--rounds", "20"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every round committed at every validator"));
    assert!(stdout.contains("0 deliveries missing"));
}
