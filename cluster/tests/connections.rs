//! Connection budgets on a loopback cluster: idle and slow clients cannot lock a port out,
//! unfinished frames cannot hold more than the port's budget, requests queued for a busy node
//! cannot hold more than its inbox's, and quiet clients time out.
//! The limits are scaled down from the defaults so the tests run in seconds; the full-size
//! case (2,000 idle connections and 50 slow senders against the default limits) is in
//! `cluster/tests/processes.rs`'s long run and docs/operations.md.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{agree, config_text, rpc_ping, slow_sender, start};
use squall_cluster::config::ClusterConfig;
use squall_cluster::rpc::{self, CallError};
use squall_cluster::runtime::connect;
use squall_proto::NodeId;
use squall_proto::kvs::KvsMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The test configuration with `limits` added to its `[limits]` section.
fn config(name: &str, limits: &str) -> ClusterConfig {
    let text = config_text(name, 3, 0, 3).replace("[limits]\n", &format!("[limits]\n{limits}\n"));
    ClusterConfig::parse(&text).expect("valid")
}

/// Whether `stream` is closed by the other end within `limit` (reading what it sends).
async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A RESP PING on a new connection: how long until `+PONG`.
async fn resp_ping(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await.expect("write");
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.expect("a reply");
    assert_eq!(&reply, b"+PONG\r\n");
    started.elapsed()
}

/// A RESP SET of `key` on a new connection (node 0 coordinates it at majority, so it needs its
/// peers' acknowledgements): how long until `+OK`.
async fn resp_set(addr: SocketAddr, key: &str) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let command = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len());
    stream.write_all(command.as_bytes()).await.expect("write");
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).await.expect("a reply");
    assert_eq!(&reply, b"+OK\r\n", "{}", String::from_utf8_lossy(&reply));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_lock_out_neither_new_clients_nor_replication() {
    let config = config("lockout", "max_connections = 32\nframe_timeout_ms = 2000");
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let (rpc, resp) = (nodes[0].rpc_addr, nodes[0].resp_addr.expect("a RESP port"));
    resp_set(resp, "warm").await;

    // 10 slow senders on each port, then 100 idle connections on each: the ports are full.
    let limit = Duration::from_secs(5);
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..10 {
        slow.spawn(slow_sender(rpc, &[0, 0, 1, 0], limit));
        slow.spawn(slow_sender(resp, b"*1\r\n$100\r\nPI", limit));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        for addr in [rpc, resp] {
            if let Ok(stream) = TcpStream::connect(addr).await {
                idle.push(stream);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A new client on either port is served at once: it closes the quietest client (every
    // slow sender is still within its 2 s frame timeout, so the ports are still full).
    let rpc_wait = rpc_ping(rpc, config.limits.max_frame_bytes).await;
    let resp_wait = resp_ping(resp).await;
    assert!(rpc_wait < Duration::from_secs(1), "RPC ping took {rpc_wait:?}");
    assert!(resp_wait < Duration::from_secs(1), "RESP ping took {resp_wait:?}");

    // Replication goes on: a majority SET through node 0 needs its peers' acknowledgements.
    let took = resp_set(resp, "after").await;
    assert!(took < Duration::from_secs(1), "the SET took {took:?}");
    let stores = agree(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
    assert!(stores[0].keys().any(|k| k.as_str() == "after"), "replicated everywhere");

    // Every slow sender was closed: by the frame timeout (2 s) at the latest.
    while let Some(kept) = slow.join_next().await {
        let kept = kept.expect("no panic").expect("a slow sender outlived the frame timeout");
        assert!(kept < Duration::from_millis(3500), "a slow sender was kept {kept:?}");
    }
    drop(idle);
    for node in nodes {
        node.stop().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_cannot_hold_more_than_the_ports_budget() {
    // Frames up to 128 KiB, a budget of two of them; each connection declares 120,000 bytes
    // (which the codec reserves at once) and sends ten.
    let config = config("budget", "max_buffered_bytes = 262144\nframe_timeout_ms = 60000");
    let node = start(&config, 0).await;
    let mut streams = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(node.rpc_addr).await.expect("connect");
        let mut head = 120_000u32.to_be_bytes().to_vec();
        head.extend_from_slice(&[0; 10]);
        stream.write_all(&head).await.expect("write");
        streams.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut closed = 0;
    for stream in &mut streams {
        closed += usize::from(closes_within(stream, Duration::from_millis(300)).await);
    }
    assert_eq!(closed, 4, "two unfinished frames fit the budget, the other four are closed");
    let client = connect(node.rpc_addr, config.limits.max_frame_bytes).await.expect("connect");
    client.ping(tarpc::context::current()).await.expect("small frames still fit");
    drop(streams);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_client_is_closed_and_a_busy_one_is_not() {
    let config = config("idle", "idle_timeout_ms = 300");
    let node = start(&config, 0).await;
    let mut quiet = TcpStream::connect(node.rpc_addr).await.expect("connect");
    let busy = connect(node.rpc_addr, config.limits.max_frame_bytes).await.expect("connect");
    let pinging = async {
        for _ in 0..15 {
            busy.ping(tarpc::context::current()).await.expect("a busy client stays served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (closed, ()) = tokio::join!(closes_within(&mut quiet, Duration::from_secs(2)), pinging);
    assert!(closed, "a client quiet for 300 ms is closed");
    node.stop().await.expect("stops");
}

/// Requests waiting in a busy node's inbox are bounded in bytes (`limits.max_inbox_bytes`):
/// beyond the budget a call is refused as overloaded at once (definitely: the node did not
/// take it), and once the node has taken what was queued, calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_queued_for_a_busy_node_are_bounded_in_bytes() {
    let config = config("inbox-bytes", "max_inbox_bytes = 131072");
    let node = start(&config, 0).await;
    let rpc = connect(node.rpc_addr, config.limits.max_frame_bytes).await.expect("connect");
    let client = NodeId(1 << 63);
    // A read of a 60 kB key: about 60 kB encoded, so two fit in the budget and a third does not.
    let get = |req| rpc::encode(KvsMsg::Get { req, key: "k".repeat(60_000) }).expect("encode");
    let ctx = tarpc::context::current;

    // The node is busy for 800 ms (its task blocked in an inspection) while five arrive.
    let handle = node.handle().clone();
    let busy = tokio::spawn(async move {
        handle.inspect(|_| std::thread::sleep(Duration::from_millis(800))).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answers = futures::future::join_all((0..5).map(|req| rpc.call(ctx(), client, get(req))))
        .await
        .into_iter()
        .map(|answer| answer.expect("the transport answers"))
        .collect::<Vec<_>>();
    let served = answers.iter().filter(|answer| answer.is_ok()).count();
    let refused = answers.iter().filter(|answer| **answer == Err(CallError::Overloaded)).count();
    assert_eq!((served, refused), (2, 3), "{answers:?}");
    busy.await.expect("inspection").expect("the node is running");

    // The budget was released as the node took the two: calls are served again.
    let answer = rpc.call(ctx(), client, get(9)).await.expect("the transport answers");
    assert!(answer.is_ok(), "{answer:?}");
}
