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

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame as Frame;
use squall_proto::kvs::StorageNode;
use squall_proto::lattice::LatticeValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{KvClient, KvError};
use crate::port::{Conn, ConnLimits, Port};
use crate::runtime::NodeHandle;

/// What a RESP port needs.
#[derive(Debug)]
pub struct RespContext {
    /// The client library requests go through.
    pub client: KvClient,
    /// The node this port belongs to (for `INFO`).
    pub node: NodeHandle<StorageNode>,
    /// The largest request accepted, in bytes; a larger one closes the connection.
    pub max_request: usize,
    /// Commands of one connection in flight at once; a deeper pipeline waits.
    pub max_in_flight: usize,
}

/// Serves RESP on `listener` within `limits` (every connection is a client's).
pub fn serve(listener: TcpListener, context: Arc<RespContext>, limits: ConnLimits) -> Port {
    let refusal: &'static [u8] = b"-ERR max number of clients reached\r\n";
    Port::spawn(listener, limits, Some(refusal), move |stream, conn| {
        let context = context.clone();
        async move {
            if let Err(e) = connection(stream, context, &conn).await {
                tracing::debug!(error = %e, "RESP connection ended");
            }
        }
    })
}

/// The keys a command reads and writes, for ordering commands of one pipeline.
fn footprint(frame: &Frame) -> (Vec<Bytes>, bool) {
    let Frame::Array(parts) = frame else { return (Vec::new(), false) };
    let arg = |i: usize| match parts.get(i) {
        Some(Frame::BulkString(b) | Frame::SimpleString(b)) => Some(b.clone()),
        _ => None,
    };
    let name = arg(0).map(|n| n.to_ascii_uppercase()).unwrap_or_default();
    match name.as_slice() {
        b"GET" => (arg(1).into_iter().collect(), false),
        b"SET" => (arg(1).into_iter().collect(), true),
        b"MGET" => ((1..parts.len()).filter_map(arg).collect(), false),
        b"MSET" => ((1..parts.len()).step_by(2).filter_map(arg).collect(), true),
        _ => (Vec::new(), false),
    }
}

fn is_quit(frame: &Frame) -> bool {
    matches!(frame, Frame::Array(parts) if matches!(parts.first(),
        Some(Frame::BulkString(name)) if name.eq_ignore_ascii_case(b"QUIT")))
}

/// Splits a pipeline into waves that may run concurrently: a command starts a new wave when
/// it writes a key an earlier command of the current wave touches, or touches a key it writes.
/// Waves run one after the other, so a pipeline's effects are those of running it in order.
fn waves(frames: Vec<Frame>) -> Vec<Vec<Frame>> {
    let mut waves: Vec<Vec<Frame>> = Vec::new();
    let mut touched: HashMap<Bytes, bool> = HashMap::new();
    for frame in frames {
        let (keys, writes) = footprint(&frame);
        let conflict = keys.iter().any(|k| touched.get(k).is_some_and(|w| *w || writes));
        if conflict || waves.is_empty() {
            waves.push(Vec::new());
            touched.clear();
        }
        for key in keys {
            *touched.entry(key).or_default() |= writes;
        }
        waves.last_mut().expect("a wave").push(frame);
    }
    waves
}

async fn connection(
    mut stream: TcpStream,
    context: Arc<RespContext>,
    conn: &Conn,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    loop {
        // Up to `max_in_flight` complete commands, stopping after a QUIT.
        let mut frames = Vec::new();
        let mut fatal = None;
        let mut quit = false;
        while frames.len() < context.max_in_flight && !quit {
            match decode_bytes_mut(&mut input) {
                Ok(Some((frame, _, _))) => {
                    quit = is_quit(&frame);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(format!("ERR Protocol error: {}", e.details()));
                    break;
                }
            }
        }
        let parsed = frames.len();
        if parsed > 0 {
            // Progress: a command left part-way is timed from here.
            conn.active();
            conn.partial(false);
        }
        conn.partial(!input.is_empty());
        for wave in waves(frames) {
            let mut running: FuturesOrdered<_> =
                wave.into_iter().map(|frame| execute(&context, frame)).collect();
            while let Some(reply) = running.next().await {
                encode(&mut output, &reply);
            }
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
            conn.active();
        }
        if quit {
            return Ok(());
        }
        // A full batch may have more complete commands behind it: parse before reading.
        if parsed < context.max_in_flight {
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
            conn.partial(true);
            if let Err(e) = conn.hold(input.len()) {
                encode(&mut output, &error(format!("ERR {e}; try again later")));
                stream.write_all(&output).await?;
                return Err(e);
            }
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

/// Runs one command. (`QUIT` is answered here; the connection loop closes after it.)
async fn execute(context: &RespContext, frame: Frame) -> Frame {
    let Frame::Array(parts) = frame else {
        return error("ERR Protocol error: expected an array of bulk strings");
    };
    let mut args = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Frame::BulkString(bytes) | Frame::SimpleString(bytes) => args.push(bytes),
            _ => return error("ERR Protocol error: expected bulk strings"),
        }
    }
    let Some(name) = args.first() else {
        return error("ERR empty command");
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    match (name.as_str(), args.len()) {
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
            mset_reply(replies)
        }
        ("INFO", 1 | 2) => Frame::BulkString(Bytes::from(info(context).await)),
        ("QUIT", _) => ok(),
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
    }
}

/// `+OK` if every pair was written; otherwise an error saying the others may have been, the
/// most uncertain failure first (an indefinite one before a definite one).
fn mset_reply(replies: Vec<Frame>) -> Frame {
    let failures: Vec<String> = replies
        .iter()
        .filter_map(|r| match r {
            Frame::Error(e) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    if failures.is_empty() {
        return ok();
    }
    let worst = failures.iter().find(|f| f.contains("indefinite")).unwrap_or(&failures[0]);
    let written = replies.len() - failures.len();
    error(format!(
        "{worst} (MSET is not atomic: {written} of {} keys were written, {} failed)",
        replies.len(),
        failures.len()
    ))
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
        .inspect(|storage| {
            (
                storage.store().len(),
                storage.incarnation(),
                storage.ring().epoch().0,
                storage.ring().members().len(),
            )
        })
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::types::Resp2Frame;

    fn command(args: &[&str]) -> Frame {
        Frame::Array(args.iter().map(|a| Frame::BulkString(Bytes::from(a.to_string()))).collect())
    }

    fn names(waves: &[Vec<Frame>]) -> Vec<Vec<String>> {
        waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .map(|frame| match frame {
                        Frame::Array(parts) => parts
                            .iter()
                            .map(|p| {
                                String::from_utf8_lossy(p.as_bytes().unwrap_or_default())
                                    .into_owned()
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_pipeline_runs_in_waves_that_keep_each_key_in_order() {
        let pipeline = vec![
            command(&["SET", "a", "1"]),
            command(&["GET", "a"]),
            command(&["GET", "b"]),
            command(&["SET", "c", "1"]),
            command(&["GET", "a"]),
            command(&["MSET", "b", "2", "d", "2"]),
            command(&["PING"]),
        ];
        assert_eq!(
            names(&waves(pipeline)),
            [
                vec!["SET a 1"],
                vec!["GET a", "GET b", "SET c 1", "GET a"],
                vec!["MSET b 2 d 2", "PING"],
            ]
        );
        let reads =
            vec![command(&["GET", "k"]), command(&["GET", "k"]), command(&["MGET", "k", "j"])];
        assert_eq!(waves(reads).len(), 1, "reads of one key overlap");
    }

    #[test]
    fn a_partly_failed_mset_says_so_and_puts_the_indefinite_failure_first() {
        assert_eq!(mset_reply(vec![ok(), ok()]), ok());
        let reply =
            mset_reply(vec![ok(), error("ERR node refused"), error("ERR indefinite: no answer")]);
        let Frame::Error(text) = reply else { panic!("an error") };
        assert!(text.starts_with("ERR indefinite: no answer"), "{text}");
        assert!(text.contains("1 of 3 keys were written, 2 failed"), "{text}");
    }
}
