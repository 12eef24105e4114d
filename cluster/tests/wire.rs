//! Loopback tests of the wire: every lattice type round-trips through the client library; bad
//! input gets a typed error or a closed connection, and the node keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{config, start};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::{BytesFrame as Frame, Resp2Frame as _};
use squall_cluster::client::KvClient;
use squall_cluster::client::KvError;
use squall_cluster::rpc::CallError;
use squall_cluster::runtime::connect;
use squall_proto::NodeId;
use squall_proto::kvs::{Durability, KvsMsg, PutError};
use squall_proto::lattice::{
    LatticeType, LatticeValue, Lww, Max, Min, MultiKeyCausal, PnCounter, Priority, SetUnion,
    SingleKeyCausal, Stamp, VectorClock, WriterId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn b(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

fn clock(writer: u64, n: u64) -> VectorClock {
    VectorClock::new([(WriterId(writer), n)])
}

/// Reads one RESP reply from `stream`.
async fn one_reply(stream: &mut TcpStream) -> Frame {
    let mut input = bytes::BytesMut::new();
    loop {
        if let Some((frame, ..)) = decode_bytes_mut(&mut input).expect("a RESP reply") {
            return frame;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut input))
            .await
            .expect("a reply within 5 s")
            .expect("read");
        assert!(read > 0, "the connection closed before a reply");
    }
}

/// Reads from `stream` until it closes; panics if it stays open for 5 s.
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection stayed open after bad input"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lattice_type_round_trips_and_merges() {
    let config = config("round-trips", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let client = KvClient::new(&config);
    let cases: Vec<(&str, LatticeValue, LatticeValue, LatticeValue)> = vec![
        (
            "lww",
            LatticeValue::Lww(Lww::new(Stamp::new(2, WriterId(1)), b("new"))),
            LatticeValue::Lww(Lww::new(Stamp::new(1, WriterId(1)), b("old"))),
            LatticeValue::Lww(Lww::new(Stamp::new(2, WriterId(1)), b("new"))),
        ),
        (
            "pn-counter",
            LatticeValue::PnCounter(PnCounter::new([(WriterId(1), 2, 0)])),
            LatticeValue::PnCounter(PnCounter::new([(WriterId(1), 1, 0), (WriterId(2), 0, 5)])),
            LatticeValue::PnCounter(PnCounter::new([(WriterId(1), 2, 0), (WriterId(2), 0, 5)])),
        ),
        (
            "set",
            LatticeValue::Set(SetUnion::new([b("a")])),
            LatticeValue::Set(SetUnion::new([b("b")])),
            LatticeValue::Set(SetUnion::new([b("a"), b("b")])),
        ),
        (
            "max",
            LatticeValue::Max(Max::new(7)),
            LatticeValue::Max(Max::new(3)),
            LatticeValue::Max(Max::new(7)),
        ),
        (
            "min",
            LatticeValue::Min(Min::new(7)),
            LatticeValue::Min(Min::new(3)),
            LatticeValue::Min(Min::new(3)),
        ),
        (
            "priority",
            LatticeValue::Priority(Priority::new(5, WriterId(1), b("five"))),
            LatticeValue::Priority(Priority::new(2, WriterId(1), b("two"))),
            LatticeValue::Priority(Priority::new(2, WriterId(1), b("two"))),
        ),
        (
            "single-key-causal",
            LatticeValue::SingleKeyCausal(SingleKeyCausal::new(clock(1, 1), b("x"))),
            LatticeValue::SingleKeyCausal(SingleKeyCausal::new(clock(2, 1), b("y"))),
            {
                let mut both =
                    LatticeValue::SingleKeyCausal(SingleKeyCausal::new(clock(1, 1), b("x")));
                both.merge(LatticeValue::SingleKeyCausal(SingleKeyCausal::new(
                    clock(2, 1),
                    b("y"),
                )))
                .expect("same type");
                both
            },
        ),
        (
            "multi-key-causal",
            LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                clock(1, 1),
                Default::default(),
                b("x"),
            )),
            LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                clock(1, 2),
                Default::default(),
                b("x2"),
            )),
            LatticeValue::MultiKeyCausal(MultiKeyCausal::new(
                clock(1, 2),
                Default::default(),
                b("x2"),
            )),
        ),
    ];
    for (name, first, second, merged) in cases {
        let key = format!("rt-{name}");
        client.put(&key, first).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        client.put_with(&key, second, Durability::All).await.expect("second put");
        let read = client.get(&key).await.expect("get");
        assert_eq!(read, Some(merged), "{name}: the read is the merge of both puts");
    }
    assert_eq!(client.get("never-written").await.expect("get"), None);

    // A put of another type is a definite, typed rejection, and changes nothing.
    let err = client.put("rt-max", client.lww(b("x"))).await.expect_err("type mismatch");
    assert_eq!(err, KvError::Rejected(PutError::mismatch(LatticeType::Max, LatticeType::Lww)));
    assert!(err.is_definite());
    assert_eq!(client.get("rt-max").await.expect("get"), Some(LatticeValue::Max(Max::new(7))));

    // An oversized value is refused before it is sent.
    let big = client.lww(Bytes::from(vec![0u8; 70_000]));
    let err = client.put("big", big).await.expect_err("too large");
    assert!(matches!(err, KvError::TooLarge { max: 65536, .. }), "{err}");
    assert!(err.is_definite());

    for node in nodes {
        node.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_typed_errors_and_garbage_closes_only_its_connection() {
    let config = config("bad-input", 1, 0, 1);
    let node = start(&config, 0).await;
    let rpc = connect(node.rpc_addr, config.limits.max_frame_bytes).await.expect("connect");
    let ctx = tarpc::context::current;
    let client_id = NodeId(1 << 63);
    let encode = |msg: &KvsMsg| squall_cluster::rpc::encode(msg.clone()).expect("encode");

    let answer = rpc.call(ctx(), client_id, Bytes::from_static(&[0xff; 16])).await.expect("rpc");
    assert!(matches!(answer, Err(CallError::Malformed(_))), "{answer:?}");
    let hello = encode(&KvsMsg::Hello { incarnation: 9 });
    let answer = rpc.call(ctx(), client_id, hello).await.expect("rpc");
    assert_eq!(answer, Err(CallError::NotARequest));
    // A message of a protocol the node does not speak: a session call to a storage node.
    let dag = squall_proto::session::Dag::chain(&[&[]]).expect("a DAG");
    let level = squall_proto::session::Level::Lww;
    let call = squall_proto::session::SessionMsg::Call { req: 1, level, dag, args: vec![] };
    let call = squall_cluster::rpc::encode(call).expect("encode");
    let answer = rpc.call(ctx(), client_id, call).await.expect("rpc");
    assert!(
        matches!(&answer, Err(CallError::Malformed(m)) if m.contains("does not speak")),
        "{answer:?}"
    );
    let get = encode(&KvsMsg::Get { req: 1, key: "k".into() });
    // A payload of another protocol version (a client of another build) is refused, not
    // misread; so is an empty one.
    let mut skewed = get.to_vec();
    skewed[0] = squall_cluster::rpc::PROTOCOL_VERSION + 1;
    let answer = rpc.call(ctx(), client_id, Bytes::from(skewed)).await.expect("rpc");
    let refusal = format!(
        "protocol version {}, but this node speaks version {}",
        squall_cluster::rpc::PROTOCOL_VERSION + 1,
        squall_cluster::rpc::PROTOCOL_VERSION
    );
    assert!(matches!(&answer, Err(CallError::Malformed(m)) if m.contains(&refusal)), "{answer:?}");
    let answer = rpc.call(ctx(), client_id, Bytes::new()).await.expect("rpc");
    assert!(matches!(&answer, Err(CallError::Malformed(m)) if m.contains("empty")), "{answer:?}");
    let answer = rpc.call(ctx(), NodeId(5), get.clone()).await.expect("rpc");
    assert_eq!(answer, Err(CallError::InvalidCaller(5)));
    let huge = Bytes::from(vec![7u8; 100_000]);
    let answer = rpc.call(ctx(), client_id, huge).await.expect("rpc");
    assert!(
        matches!(answer, Err(CallError::TooLarge { bytes: 100_000, max: 65536 })),
        "{answer:?}"
    );
    let answer = rpc.call(ctx(), client_id, get).await.expect("rpc").expect("answered");
    assert_eq!(
        squall_cluster::rpc::decode::<KvsMsg>(&answer).expect("decodes"),
        KvsMsg::GetOk { req: 1, value: None }
    );

    // Garbage on the RPC port: a frame that is not a tarpc message, and a length prefix far
    // over the frame limit. Each connection is closed; the node goes on serving.
    for garbage in [&b"\x00\x00\x00\x10garbage-garbage!"[..], &b"\x7f\xff\xff\xffxxxx"[..]] {
        let mut raw = TcpStream::connect(node.rpc_addr).await.expect("connect");
        raw.write_all(garbage).await.expect("write");
        closed(&mut raw).await;
    }
    let client = KvClient::new(&config);
    client.put("still", client.lww(b("serving"))).await.expect("the node still serves");

    // Garbage on the RESP port: an error reply, then the connection is closed.
    let resp = node.resp_addr.expect("resp port");
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(b"*2\r\n$3\r\nGET\r\n:oops\r\n").await.expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    // A line that is not RESP is an inline command, as in Redis: an unknown one is an error
    // reply, and the connection stays open.
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(b"%%%% not resp at all\r\nQUIT\r\n").await.expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert!(reply.starts_with("-ERR unknown command '%%%%'"), "{reply}");
    assert!(reply.ends_with("+OK\r\n"), "{reply}");
    // A RESP type marker followed by nonsense cannot be resynchronised: the connection closes.
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(b"*x\r\n").await.expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    // A bulk string larger than the limit is refused without buffering it all.
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n").await.expect("write");
    raw.write_all(&vec![b'x'; 200_000]).await.expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert!(reply.contains("larger than"), "{reply}");

    // And RESP still works, pipelined: answers come back in order.
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n\
          *2\r\n$3\r\nGET\r\n$5\r\nstill\r\n*1\r\n$3\r\nFOO\r\n*1\r\n$4\r\nQUIT\r\n",
    )
    .await
    .expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert!(
        reply.starts_with("+OK\r\n$1\r\n1\r\n+PONG\r\n$7\r\nserving\r\n-ERR unknown command 'FOO'"),
        "{reply}"
    );
    assert!(reply.ends_with("+OK\r\n"), "{reply}");

    // Inline commands, as typed by hand (a bare newline ends one too), ECHO, and SELECT of a
    // database that does not exist.
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    raw.write_all(b"PING\r\nECHO  hi\nGET a\r\nSELECT 1\r\nQUIT\r\n").await.expect("write");
    let reply = String::from_utf8(closed(&mut raw).await).expect("utf8");
    assert_eq!(
        reply,
        "+PONG\r\n$2\r\nhi\r\n$1\r\n1\r\n-ERR DB index is out of range: Squall has only \
         database 0\r\n+OK\r\n"
    );

    // EXISTS, TYPE, and the node's keys by DBSIZE and SCAN (a cursor over pages of 2).
    let mut raw = TcpStream::connect(resp).await.expect("connect");
    let mut ask = async |line: &str| {
        raw.write_all(format!("{line}\r\n").as_bytes()).await.expect("write");
        one_reply(&mut raw).await
    };
    assert_eq!(ask("EXISTS a nope a").await, Frame::Integer(2));
    assert_eq!(ask("TYPE a").await, Frame::SimpleString("lww".into()));
    assert_eq!(ask("TYPE nope").await, Frame::SimpleString("none".into()));
    let Frame::Integer(size) = ask("DBSIZE").await else { panic!("DBSIZE is an integer") };
    let (mut cursor, mut scanned) = ("0".to_owned(), Vec::new());
    loop {
        let Frame::Array(page) = ask(&format!("SCAN {cursor} COUNT 2")).await else {
            panic!("SCAN answers an array")
        };
        let [Frame::BulkString(next), Frame::Array(keys)] = &page[..] else { panic!("{page:?}") };
        scanned.extend(
            keys.iter().map(|k| String::from_utf8_lossy(k.as_bytes().unwrap()).into_owned()),
        );
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(scanned.len() as i64, size, "{scanned:?}");
    assert!(scanned.contains(&"still".to_owned()) && scanned.contains(&"a".to_owned()));
    let matched = ask("SCAN 0 MATCH st?l* COUNT 1000").await;
    assert_eq!(
        matched,
        Frame::Array(vec![
            Frame::BulkString("0".into()),
            Frame::Array(vec![Frame::BulkString("still".into())])
        ])
    );

    // After a graceful stop, a new client's put fails definitely: the port is closed.
    node.stop().await.expect("stop");
    let fresh = KvClient::new(&config);
    let err = fresh.put("after", fresh.lww(b("x"))).await.expect_err("stopped");
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
}

/// A graceful stop drains: puts in flight when it starts are answered, and the rest are
/// refused definitely; none is left with an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_answers_or_definitely_refuses_every_call_in_flight() {
    let config = config("drain", 1, 0, 1);
    let node = start(&config, 0).await;
    // A deadline long enough that no put times out (this is a debug build, checking the
    // node's step invariants on every input): a timeout would be an honest "unknown".
    let mut settings = squall_cluster::client::ClientSettings::from_config(&config);
    settings.timeout = Duration::from_secs(20);
    let client = std::sync::Arc::new(KvClient::new(&config).with_settings(settings));
    client.put("warm", client.lww(b("up"))).await.expect("connected");
    let puts: Vec<_> = (0..500)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(&format!("d{i}"), client.lww(b("v"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2)).await;
    node.stop().await.expect("stop");
    let (mut ok, mut refused) = (0, 0);
    for put in puts {
        match put.await.expect("task") {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(e.is_definite(), "a call in flight during a graceful stop: {e}");
                refused += 1;
            }
        }
    }
    // Every call ended (none hangs on a stopped node), and none with an unknown outcome.
    assert_eq!(ok + refused, 500);
}

/// `redis-cli` against the RESP port, when it is installed (CI installs it and sets
/// `SQUALL_REQUIRE_REDIS_CLI=1`, which makes its absence a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_sets_and_gets() {
    let required = std::env::var_os("SQUALL_REQUIRE_REDIS_CLI").is_some();
    if std::process::Command::new("redis-cli").arg("--version").output().is_err() {
        assert!(!required, "redis-cli is required but not installed");
        return;
    }
    let config = config("redis-cli", 1, 0, 1);
    let node = start(&config, 0).await;
    let port = node.resp_addr.expect("resp").port().to_string();
    let cli = |args: &[&str]| {
        let port = port.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            let out = tokio::process::Command::new("redis-cli")
                .arg("-p")
                .arg(port)
                .args(args)
                .output()
                .await
                .expect("redis-cli runs");
            String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
        }
    };
    assert_eq!(cli(&["SET", "greeting", "hello squall"]).await, "OK");
    assert_eq!(cli(&["GET", "greeting"]).await, "hello squall");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]).await, "OK");
    assert_eq!(cli(&["MGET", "a", "b", "nope"]).await, "1\n2");
    assert_eq!(cli(&["PING"]).await, "PONG");
    assert!(cli(&["INFO"]).await.contains("keys:3"));
    // Counting: a missing key counts from 0; GET and TYPE read the counter.
    assert_eq!(cli(&["INCR", "hits"]).await, "1");
    assert_eq!(cli(&["INCRBY", "hits", "41"]).await, "42");
    assert_eq!(cli(&["DECR", "hits"]).await, "41");
    assert_eq!(cli(&["DECRBY", "hits", "-9"]).await, "50");
    assert_eq!(cli(&["DECRBY", "below", "3"]).await, "-3");
    assert_eq!(cli(&["GET", "hits"]).await, "50");
    assert_eq!(cli(&["TYPE", "hits"]).await, "pn-counter");
    assert!(cli(&["INCR", "greeting"]).await.starts_with("WRONGTYPE"));
    assert_eq!(cli(&["INCRBY", "hits", "x"]).await, "ERR value is not an integer or out of range");
    assert_eq!(cli(&["GET", "hits"]).await, "50", "a refused add changes nothing");
    // Deleting: DEL counts the keys that held a value; a deleted key reads as missing.
    assert_eq!(cli(&["DEL", "a", "b", "nope"]).await, "2");
    assert_eq!(cli(&["EXISTS", "a", "b", "greeting"]).await, "1");
    assert_eq!(cli(&["GET", "a"]).await, "");
    assert_eq!(cli(&["TYPE", "a"]).await, "none");
    assert!(cli(&["DEL", "hits"]).await.starts_with("WRONGTYPE"));
    assert_eq!(cli(&["DBSIZE"]).await, "3", "greeting, hits and below");
    node.stop().await.expect("stop");
}

/// A delete on one node wins on every replica, reads as missing there, leaves DBSIZE and SCAN,
/// and sticks: a write stamped before it, arriving after it, does not bring the value back. A
/// later write does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_wins_everywhere_and_an_older_write_cannot_undo_it() {
    let config = config("deleting", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let mut streams = Vec::new();
    for node in &nodes {
        streams.push(TcpStream::connect(node.resp_addr.expect("resp")).await.expect("connect"));
    }
    let bulk = |text: &str| Frame::BulkString(b(text));
    assert_eq!(
        request(&mut streams[0], &["SET", "doomed", "v1"]).await,
        Frame::SimpleString(b("OK"))
    );
    assert_eq!(request(&mut streams[0], &["SET", "kept", "k"]).await, Frame::SimpleString(b("OK")));
    // Until node 1 has seen the write its DEL may count 0, but the tombstone it writes is
    // stamped after the write it read, or after its own clock: either way it wins.
    let deleted = request(&mut streams[1], &["DEL", "doomed"]).await;
    assert!(matches!(deleted, Frame::Integer(0 | 1)), "{deleted:?}");
    // An older write (stamped at time 1 by another writer) arriving after the delete.
    let client = KvClient::new(&config);
    let stale = LatticeValue::Lww(Lww::new(Stamp::new(1, WriterId(77)), b("v0")));
    client.put_with("doomed", stale, Durability::All).await.expect("a stale write is merged");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for stream in &mut streams {
        loop {
            let read = request(stream, &["GET", "doomed"]).await;
            let exists = request(stream, &["EXISTS", "doomed"]).await;
            let size = request(stream, &["DBSIZE"]).await;
            let scan = request(stream, &["SCAN", "0", "COUNT", "100"]).await;
            let listed = format!("{scan:?}");
            if read == Frame::Null && exists == Frame::Integer(0) && size == Frame::Integer(1) {
                assert!(listed.contains("kept") && !listed.contains("doomed"), "{listed}");
                assert_eq!(
                    request(stream, &["TYPE", "doomed"]).await,
                    Frame::SimpleString(b("none"))
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {read:?}, exists {exists:?}, dbsize {size:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The library reads the tombstone as a deleted register, not as a missing key.
    let stored = client.get("doomed").await.expect("read").expect("the tombstone is stored");
    assert!(stored.is_deleted(), "{stored:?}");
    // Deleting again finds nothing to count; a later write brings the key back everywhere.
    assert_eq!(request(&mut streams[2], &["DEL", "doomed"]).await, Frame::Integer(0));
    assert_eq!(
        request(&mut streams[2], &["SET", "doomed", "v2"]).await,
        Frame::SimpleString(b("OK"))
    );
    for stream in &mut streams {
        loop {
            if request(stream, &["GET", "doomed"]).await == bulk("v2") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "v2 did not arrive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Only LWW keys can be deleted; the counter is untouched.
    assert_eq!(request(&mut streams[0], &["INCR", "count"]).await, Frame::Integer(1));
    let refused = request(&mut streams[0], &["DEL", "count"]).await;
    assert!(matches!(&refused, Frame::Error(e) if e.starts_with("WRONGTYPE")), "{refused:?}");
    assert_eq!(request(&mut streams[0], &["GET", "count"]).await, bulk("1"));
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// Sends `command` on `stream` and reads its reply.
async fn request(stream: &mut TcpStream, command: &[&str]) -> Frame {
    let mut request = format!("*{}\r\n", command.len());
    for part in command {
        request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(request.as_bytes()).await.expect("write");
    one_reply(stream).await
}

/// The seed article's shared counter, which loses updates on S3: here many clients on every
/// node of a cluster count at once, and not one increment is lost. Each node's RESP port is one
/// writer for all its connections; the library clients are writers of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_across_nodes_are_never_lost() {
    const CONNECTIONS_PER_NODE: usize = 3;
    const ADDS: i64 = 40;
    let config = config("counting", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for node in &nodes {
        for c in 0..CONNECTIONS_PER_NODE {
            let addr = node.resp_addr.expect("resp");
            tasks.spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                for i in 0..ADDS {
                    // Mostly increments, some decrements, some by more than one.
                    let reply = match (c, i % 4) {
                        (0, 3) => request(&mut stream, &["DECR", "visits"]).await,
                        (1, _) => request(&mut stream, &["INCRBY", "visits", "3"]).await,
                        _ => request(&mut stream, &["INCR", "visits"]).await,
                    };
                    assert!(matches!(reply, Frame::Integer(_)), "{reply:?}");
                }
            });
        }
    }
    for _ in 0..2 {
        let client = KvClient::new(&config);
        tasks.spawn(async move {
            for _ in 0..ADDS {
                client.add("visits", 2).await.expect("add");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a counting task");
    }
    // Per node: connection 0 adds 30 and takes 10, connection 1 adds 120, connection 2 adds
    // 40; and the two library clients add 80 each.
    let expected = 3 * (30 - 10 + 120 + 40) + 2 * 2 * ADDS;
    // Every replica converges on the total (gossip may still be on its way).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for node in &nodes {
        let mut stream = TcpStream::connect(node.resp_addr.expect("resp")).await.expect("connect");
        loop {
            let reply = request(&mut stream, &["GET", "visits"]).await;
            let read = reply.as_str().and_then(|text| text.parse::<i64>().ok());
            if read == Some(expected) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node reads {reply:?}, not {expected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for node in nodes {
        node.stop().await.expect("stop");
    }
}
