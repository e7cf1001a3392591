//! T1 — encrypted transport throughput (see BENCHMARKS.md).
//!
//! `cargo bench --bench throughput -- [--bytes B] [--msg-size S] [--raw]`

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{cpu_secs, node_addr, Args};
use meshwire::{ChannelConfig, Event, NodeBuilder, SendError};

const CHANNEL: u32 = 1;

fn main() {
    let args = Args::parse();
    let bytes: u64 = args.get("bytes", 1 << 30);
    let msg_size: usize = args.get("msg-size", 65536);
    let raw = args.flag("raw");
    let (secs, cpu) = if raw {
        run_raw(bytes, msg_size)
    } else {
        run_meshwire(bytes, msg_size)
    };
    println!(
        "{{\"bench\":\"T1\",\"impl\":\"{}\",\"bytes\":{bytes},\"msg_size\":{msg_size},\"secs\":{secs:.3},\"mb_per_s\":{:.1},\"cpu_s\":{cpu:.2}}}",
        if raw { "raw-tcp" } else { "meshwire" },
        bytes as f64 / secs / 1e6
    );
}

fn run_meshwire(total: u64, msg_size: usize) -> (f64, f64) {
    let channel = ChannelConfig::new(CHANNEL)
        .max_message_size(msg_size.max(1))
        .send_queue_capacity(256);
    let rx_node = NodeBuilder::new("bench-t1")
        .listen(node_addr(1))
        .channel(channel.clone())
        .dedicated_queue(CHANNEL, 1024)
        .start()
        .expect("start receiver");
    let tx_node = NodeBuilder::new("bench-t1")
        .listen(node_addr(0))
        .channel(channel)
        .start()
        .expect("start sender");
    common::connect(&tx_node, &rx_node);
    let messages = total.div_ceil(msg_size as u64);
    let receiver = rx_node.channel_events(CHANNEL).unwrap();
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let recv = std::thread::spawn(move || {
        let mut got = 0u64;
        while got < total {
            match receiver.recv_timeout(Duration::from_secs(30)) {
                Ok(Event::Message { data, .. }) => got += data.len() as u64,
                Ok(_) => {}
                Err(_) => panic!("receiver stalled at {got} bytes"),
            }
        }
        Instant::now()
    });
    eprintln!("T1: {messages} messages of {msg_size} B ...");
    let peer = rx_node.peer_id();
    for i in 0..messages {
        let len = (total - i * msg_size as u64).min(msg_size as u64) as usize;
        let mut spins = 0u32;
        loop {
            match tx_node.send(peer, CHANNEL, vec![i as u8; len]) {
                Ok(()) => break,
                Err(SendError::Full) => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    let done = recv.join().expect("receiver");
    let secs = (done - start).as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    tx_node.shutdown();
    rx_node.shutdown();
    (secs, cpu)
}

fn run_raw(total: u64, msg_size: usize) -> (f64, f64) {
    let listener = TcpListener::bind(node_addr(1)).unwrap();
    let addr = listener.local_addr().unwrap();
    let recv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < total {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "sender closed early");
            got += n as u64;
        }
        Instant::now()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let len = (total - sent).min(msg_size as u64) as usize;
        // A fresh buffer per message, as the meshwire sender makes.
        let msg = vec![sent as u8; len];
        s.write_all(&msg).unwrap();
        sent += len as u64;
    }
    let done = recv.join().unwrap();
    ((done - start).as_secs_f64(), cpu_secs() - cpu0)
}
