//! A long-running meshwire node: joins through seeds, gossips on a topic.
//!
//! Lines typed on stdin are published to the topic; messages received are printed
//! with their origin and hop count. `RUST_LOG=debug` shows what the node does.
//!
//! ```sh
//! cargo run --release --example node -- --listen 127.0.0.1:7000
//! cargo run --release --example node -- --listen 127.0.0.2:7000 --seed 127.0.0.1:7000@<peer id>
//! ```

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId};

const HELP: &str = "\
meshwire node: a long-running peer that gossips lines of text on a topic.

USAGE:
    node --listen ADDR [OPTIONS]

OPTIONS:
    --listen ADDR          Address to listen on, ip:port (port 0 picks one). Required.
    --announce ADDR        Address to announce instead of the listen address (the
                           public one behind NAT); repeat for more.
    --seed ADDR[@PEERID]   A bootstrap peer; repeat for more. With @PEERID, anyone else
                           at ADDR is refused.
    --key-file F           The node's Ed25519 key (PKCS#8), created on first use
                           (mode 0600). Without it the key is new on every start.
    --network-id ID        Network id; nodes of other networks are refused
                           [default: meshwire-demo].
    --topic T              Gossip topic to subscribe and publish to [default: chat].
    --metrics ADDR         Serve Prometheus metrics over HTTP at ADDR (GET /metrics).
    --help                 This text.

Lines typed on stdin are published to the topic. Received messages are printed as
`<origin> (<hops> hops, <one-way delay> ms): <text>`, the delay from the origin's
signed publish time. RUST_LOG (error, warn, info, debug, trace) sets the log
level; logs go to stderr.";

struct Options {
    listen: SocketAddr,
    announce: Vec<SocketAddr>,
    seeds: Vec<(SocketAddr, Option<PeerId>)>,
    key_file: Option<PathBuf>,
    network: String,
    topic: String,
    metrics: Option<SocketAddr>,
}

fn parse() -> Result<Options, String> {
    let mut listen = None;
    let mut opts = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        announce: Vec::new(),
        seeds: Vec::new(),
        key_file: None,
        network: "meshwire-demo".into(),
        topic: "chat".into(),
        metrics: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let addr = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr(&value)?),
            "--announce" => opts.announce.push(addr(&value)?),
            "--seed" => {
                let (a, id) = match value.split_once('@') {
                    Some((a, id)) => (
                        a,
                        Some(
                            id.parse::<PeerId>()
                                .map_err(|e| format!("--seed {value}: {e}"))?,
                        ),
                    ),
                    None => (value.as_str(), None),
                };
                opts.seeds.push((addr(a)?, id));
            }
            "--key-file" => opts.key_file = Some(PathBuf::from(value)),
            "--network-id" => opts.network = value,
            "--topic" => opts.topic = value,
            "--metrics" => opts.metrics = Some(addr(&value)?),
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    opts.listen = listen.ok_or("--listen is required (see --help)")?;
    Ok(opts)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut builder = NodeBuilder::new(opts.network.clone())
        .listen(opts.listen)
        .channel(ChannelConfig::new(1));
    for a in &opts.announce {
        builder = builder.announce(*a);
    }
    if let Some(path) = &opts.key_file {
        builder = match builder.key_file(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
    }
    for (addr, id) in &opts.seeds {
        builder = builder.bootstrap_peer(*addr, *id);
    }
    let node = match builder.start() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    node.subscribe(&opts.topic).expect("subscribe");
    // The first line says who we are: scripts (and the multi-process test) read it.
    println!(
        "peer {} listening on {}",
        node.peer_id(),
        node.listen_addrs()[0]
    );
    let _ = std::io::stdout().flush();

    if let Some(addr) = opts.metrics {
        serve_metrics(addr, node.clone());
    }
    let events = node.events();
    std::thread::spawn(move || {
        for ev in events {
            match ev {
                Event::Gossip(g) => {
                    let origin = g.origin.map_or("anonymous".to_string(), |o| o.to_string());
                    // The origin's signed publish time, against our clock.
                    let delay = g
                        .origin_time
                        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                        .map_or(String::new(), |d| {
                            format!(", {:.1} ms", d.as_secs_f64() * 1e3)
                        });
                    println!(
                        "{origin} ({} hops{delay}): {}",
                        g.hops,
                        String::from_utf8_lossy(&g.data)
                    );
                    let _ = std::io::stdout().flush();
                }
                Event::PeerConnected { peer, addr, .. } => {
                    log::info!("connected to {} at {addr}", peer.short())
                }
                Event::PeerDisconnected { peer, reason } => {
                    log::info!("{} disconnected: {reason}", peer.short())
                }
                Event::DialFailed { addr, reason } => log::info!("dial {addr} failed: {reason}"),
                Event::AddressAdopted { addr } => {
                    log::info!("peers see us on {addr}: announcing it too")
                }
                _ => {}
            }
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        if let Err(e) = node.publish(&opts.topic, line.into_bytes()) {
            eprintln!("publish failed: {e}");
        }
    }
    // Stdin closed: keep serving until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A minimal HTTP/1.1 endpoint: every request gets the Prometheus text.
fn serve_metrics(addr: SocketAddr, node: NodeHandle) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --metrics {addr}: {e}");
            std::process::exit(1);
        }
    };
    log::info!("metrics on http://{addr}/metrics");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let body = node
                .metrics()
                .map(|m| m.to_prometheus())
                .unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}
