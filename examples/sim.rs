//! S1: the simulated propagation benchmark (../shared/BENCHMARKS.md).
//!
//! `cargo run --release --example sim -- --nodes 10000 --msgs 50 --size 1024`
//! prints one JSON line on stdout, progress on stderr. `--calibrate` measures the
//! cost model's constants on this machine instead.

use std::time::{Duration, Instant};

use meshwire::sim::{run_s1, CostModel, LinkModel, RouterProfile, S1Options};

fn usage() -> ! {
    eprintln!(
        "usage: sim [--nodes N] [--msgs M] [--size S] [--interval-ms I] [--seed X] \
         [--model regions|zero] [--config meshwire|gossipsub12] [--free-cpu] [--threads T] [--calibrate] \
         [--set knob=value[,knob=value...] ...]  knobs: see GossipConfig::set_knob"
    );
    std::process::exit(2)
}

fn main() {
    let mut opts = S1Options::default();
    let mut sets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--nodes" => opts.nodes = value().parse().unwrap_or_else(|_| usage()),
            "--msgs" => opts.msgs = value().parse().unwrap_or_else(|_| usage()),
            "--size" => opts.size = value().parse().unwrap_or_else(|_| usage()),
            "--interval-ms" => {
                opts.interval = Duration::from_millis(value().parse().unwrap_or_else(|_| usage()))
            }
            "--seed" => opts.seed = value().parse().unwrap_or_else(|_| usage()),
            "--model" => {
                opts.model = match value().as_str() {
                    "regions" => LinkModel::Regions,
                    "zero" => LinkModel::Zero,
                    _ => usage(),
                }
            }
            "--config" => {
                opts.profile = match value().as_str() {
                    "meshwire" => RouterProfile::Meshwire,
                    "gossipsub12" => RouterProfile::GossipSub12,
                    _ => usage(),
                }
            }
            "--free-cpu" => opts.cost = CostModel::free(),
            "--threads" => opts.threads = Some(value().parse().unwrap_or_else(|_| usage())),
            "--set" => sets.push(value()),
            "--calibrate" => return calibrate(),
            _ => usage(),
        }
    }
    let mut g = opts.profile.gossip_config();
    for s in &sets {
        if let Err(e) = g.set_knobs(s) {
            eprintln!("--set {s}: {e}");
            usage()
        }
    }
    opts.gossip = Some(g);
    let mut report = run_s1(&opts, &mut |line| eprintln!("{line}"));
    report.peak_rss_mb = peak_rss_mb();
    println!("{}", report.to_json());
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Measures what the cost model charges, on this machine.
fn calibrate() {
    use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let msg = [7u8; 32];
    let sig = key.sign(&msg);
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref().to_vec());
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        public.verify(&msg, sig.as_ref()).expect("valid");
    }
    let verify = t.elapsed() / n;
    let buf = vec![3u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &buf));
    }
    let sha = t.elapsed().as_nanos() as f64 / (100.0 * buf.len() as f64);
    let aead_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[1u8; 32]).expect("key"),
    );
    let mut data = vec![0u8; 16 * 1024];
    let t = Instant::now();
    for i in 0..2000u64 {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        let tag = aead_key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut data,
            )
            .expect("seal");
        let _ = std::hint::black_box(tag);
    }
    let aead = t.elapsed().as_nanos() as f64 / (2000.0 * data.len() as f64);
    println!(
        "{{\"verify_us\":{:.1},\"sha256_ns_per_byte\":{:.2},\"aes256gcm_ns_per_byte\":{:.2}}}",
        verify.as_secs_f64() * 1e6,
        sha,
        aead
    );
}
