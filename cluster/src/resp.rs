//! The RESP (Redis protocol) front end: `GET`, `SET`, `MGET`, `MSET`, `PING`, `INFO` on LWW
//! keys, so `redis-cli` and `redis-benchmark` work against Squall unchanged.
//!
//! Each connection is served by one task. Every complete command in the read buffer starts at
//! once and the answers are written back in order, so pipelined clients get pipelined service.
//! Values are LWW registers stamped by the front end's client clock; a key holding another
//! lattice type answers `WRONGTYPE`. Requests go through the [`KvClient`] library, straight
//! into the local node when it is one of the key's replicas. A frame that does not parse, or a
//! request larger than the frame limit, gets an error and the connection is closed; the node
//! goes on serving.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame as Frame;
use squall_proto::kvs::KvsNode;
use squall_proto::lattice::LatticeValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::client::{KvClient, KvError};
use crate::runtime::NodeHandle;

/// What a RESP port needs.
#[derive(Debug)]
pub struct RespContext {
    /// The client library requests go through.
    pub client: KvClient,
    /// The node this port belongs to (for `INFO`).
    pub node: NodeHandle<KvsNode>,
    /// The largest request accepted, in bytes; a larger one closes the connection.
    pub max_request: usize,
}

/// Serves RESP on `listener` until the returned task is aborted, with at most
/// `max_connections` connections open.
pub fn serve(
    listener: TcpListener,
    context: Arc<RespContext>,
    max_connections: usize,
) -> JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        // Owned by the accept loop: aborting the port aborts every connection with it.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((mut stream, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "RESP connection limit reached");
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let context = context.clone();
            connections.spawn(async move {
                if let Err(e) = connection(stream, context).await {
                    tracing::debug!(%peer, error = %e, "RESP connection ended");
                }
                drop(slot);
            });
        }
    })
}

async fn connection(mut stream: TcpStream, context: Arc<RespContext>) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        let mut batch = FuturesOrdered::new();
        let mut fatal = None;
        loop {
            match decode_bytes_mut(&mut input) {
                Ok(Some((frame, _, _))) => {
                    let context = context.clone();
                    batch.push_back(async move { execute(&context, frame).await });
                }
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(format!("ERR Protocol error: {}", e.details()));
                    break;
                }
            }
        }
        let mut quit = false;
        while let Some((reply, close)) = batch.next().await {
            encode(&mut output, &reply);
            quit |= close;
        }
        if let Some(message) = fatal.take() {
            encode(&mut output, &error(message));
            quit = true;
        } else if input.len() > context.max_request {
            let message =
                format!("ERR Protocol error: request larger than {} bytes", context.max_request);
            encode(&mut output, &error(message));
            quit = true;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if quit || stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

fn encode(output: &mut BytesMut, frame: &Frame) {
    extend_encode(output, frame, false).expect("an extending encode cannot run out of room");
}

fn error(message: impl Into<String>) -> Frame {
    Frame::Error(Str::from(message.into()))
}

fn ok() -> Frame {
    Frame::SimpleString(Bytes::from_static(b"OK"))
}

/// Runs one command; the flag asks to close the connection after the answer.
async fn execute(context: &RespContext, frame: Frame) -> (Frame, bool) {
    let Frame::Array(parts) = frame else {
        return (error("ERR Protocol error: expected an array of bulk strings"), true);
    };
    let mut args = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Frame::BulkString(bytes) | Frame::SimpleString(bytes) => args.push(bytes),
            _ => return (error("ERR Protocol error: expected bulk strings"), true),
        }
    }
    let Some(name) = args.first() else {
        return (error("ERR empty command"), false);
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let reply = match (name.as_str(), args.len()) {
        ("PING", 1) => Frame::SimpleString(Bytes::from_static(b"PONG")),
        ("PING", 2) => Frame::BulkString(args[1].clone()),
        ("GET", 2) => match key(&args[1]) {
            Ok(key) => get(context, &key).await,
            Err(e) => e,
        },
        ("SET", 3) => match key(&args[1]) {
            Ok(key) => set(context, &key, args[2].clone()).await,
            Err(e) => e,
        },
        ("SET", _) if args.len() > 3 => {
            error("ERR syntax error: Squall supports SET key value without options")
        }
        ("MGET", n) if n >= 2 => {
            let reads = args[1..].iter().map(|k| async move {
                match key(k) {
                    Ok(key) => get(context, &key).await,
                    Err(e) => e,
                }
            });
            let replies: Vec<Frame> = futures::future::join_all(reads).await;
            match replies.iter().find(|r| matches!(r, Frame::Error(_))) {
                Some(failure) => failure.clone(),
                None => Frame::Array(replies),
            }
        }
        ("MSET", n) if n >= 3 && n % 2 == 1 => {
            let writes = args[1..].chunks(2).map(|pair| async move {
                match key(&pair[0]) {
                    Ok(key) => set(context, &key, pair[1].clone()).await,
                    Err(e) => e,
                }
            });
            let replies: Vec<Frame> = futures::future::join_all(writes).await;
            replies.into_iter().find(|r| matches!(r, Frame::Error(_))).unwrap_or_else(ok)
        }
        ("INFO", 1 | 2) => Frame::BulkString(Bytes::from(info(context).await)),
        ("QUIT", _) => return (ok(), true),
        // What redis-cli and redis-benchmark ask on connect: answered harmlessly.
        ("COMMAND" | "CONFIG", _) => Frame::Array(Vec::new()),
        ("SELECT", 2) if args[1].as_ref() == b"0" => ok(),
        ("CLIENT", _) => ok(),
        ("GET" | "SET" | "MGET" | "MSET" | "PING" | "INFO" | "SELECT", _) => {
            error(format!("ERR wrong number of arguments for '{}' command", name.to_lowercase()))
        }
        _ => error(format!(
            "ERR unknown command '{}'; Squall serves GET, SET, MGET, MSET, PING, INFO",
            String::from_utf8_lossy(&args[0])
        )),
    };
    (reply, false)
}

fn key(bytes: &Bytes) -> Result<String, Frame> {
    String::from_utf8(bytes.to_vec()).map_err(|_| error("ERR Squall keys must be UTF-8"))
}

async fn get(context: &RespContext, key: &str) -> Frame {
    match context.client.get(key).await {
        Ok(None) => Frame::Null,
        Ok(Some(LatticeValue::Lww(lww))) => {
            lww.value().map_or(Frame::Null, |value| Frame::BulkString(value.clone()))
        }
        Ok(Some(other)) => error(format!(
            "WRONGTYPE {key:?} holds a {} lattice; the RESP port reads LWW keys only",
            other.lattice_type()
        )),
        Err(e) => failure(&e),
    }
}

async fn set(context: &RespContext, key: &str, value: Bytes) -> Frame {
    match context.client.put(key, context.client.lww(value)).await {
        Ok(()) => ok(),
        Err(KvError::Rejected(squall_proto::kvs::PutError::TypeMismatch(m))) => error(format!(
            "WRONGTYPE {key:?} holds a {} lattice; the RESP port writes LWW keys only",
            m.stored
        )),
        Err(e) => failure(&e),
    }
}

fn failure(e: &KvError) -> Frame {
    let kind = if e.is_definite() { "ERR" } else { "ERR indefinite:" };
    error(format!("{kind} {e}"))
}

async fn info(context: &RespContext) -> String {
    let stats = context.node.stats();
    let state = context
        .node
        .inspect(|node| match node {
            KvsNode::Storage(storage) => Some((
                storage.store().len(),
                storage.incarnation(),
                storage.ring().epoch().0,
                storage.ring().members().len(),
            )),
            _ => None,
        })
        .await
        .flatten();
    let mut text = format!(
        "# Server\r\nsquall_version:{}\r\nnode_id:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        stats.id.0
    );
    if let Some((keys, incarnation, epoch, members)) = state {
        text.push_str(&format!(
            "incarnation:{incarnation}\r\nring_epoch:{epoch}\r\nring_members:{members}\r\n\
             # Keyspace\r\nkeys:{keys}\r\n"
        ));
    }
    text.push_str(&format!(
        "# Stats\r\ncalls:{}\r\ndelivered:{}\r\nignored:{}\r\ndropped:{}\r\ntimers:{}\r\n",
        stats.calls, stats.delivered, stats.ignored, stats.dropped, stats.timers
    ));
    text
}
