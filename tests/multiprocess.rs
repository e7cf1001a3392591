//! Five node processes from `examples/node.rs` on loopback: they find each other
//! through one seed, and a line published at one arrives at all the others.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `cargo test` builds the examples next to the test binaries.
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples")
        .join(format!("node{}", std::env::consts::EXE_SUFFIX))
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[String]) -> Proc {
        let mut child = Command::new(node_binary())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Some(l),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn five_processes_find_each_other_through_one_seed_and_gossip() {
    if !node_binary().exists() {
        // `cargo test` builds examples; a filtered run may not have.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--example", "node"])
            .status()
            .expect("cargo");
        assert!(
            ok.success() && node_binary().exists(),
            "cannot build examples/node.rs"
        );
    }
    let seed = Proc::start(&[
        "--listen".into(),
        "127.71.0.1:0".into(),
        "--topic".into(),
        "t".into(),
    ]);
    let first = seed
        .wait_line(Duration::from_secs(10), |l| l.starts_with("peer "))
        .expect("seed started");
    // "peer <id> listening on <addr>"
    let words: Vec<&str> = first.split_whitespace().collect();
    let (seed_id, seed_addr) = (words[1].to_string(), words[4].to_string());
    let mut procs = vec![seed];
    for i in 2..=5 {
        let p = Proc::start(&[
            "--listen".into(),
            format!("127.71.{i}.1:0"),
            "--seed".into(),
            format!("{seed_addr}@{seed_id}"),
            "--topic".into(),
            "t".into(),
        ]);
        p.wait_line(Duration::from_secs(10), |l| l.starts_with("peer "))
            .expect("node started");
        procs.push(p);
    }
    // Give the DHT and the gossip mesh a moment, then publish from one of them,
    // again until everyone has heard it (a mesh forms within a few heartbeats).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut heard = vec![false; procs.len()];
    heard[2] = true;
    let mut round = 0;
    while heard.iter().any(|h| !h) && Instant::now() < deadline {
        round += 1;
        let text = format!("hello from process 3, round {round}");
        let stdin = procs[2].child.stdin.as_mut().unwrap();
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        for (i, p) in procs.iter().enumerate() {
            if !heard[i]
                && p.wait_line(Duration::from_secs(2), |l| l.ends_with(&text))
                    .is_some()
            {
                heard[i] = true;
            }
        }
    }
    assert!(
        heard.iter().all(|h| *h),
        "not heard by every process: {heard:?}"
    );
    // Killing the processes leaves nothing behind.
    let pids: Vec<u32> = procs.iter().map(|p| p.child.id()).collect();
    drop(procs);
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_free(pid));
    }
}

fn is_zombie_free(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| !s.contains(") Z "))
}
