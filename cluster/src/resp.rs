//! The RESP (Redis protocol) front end: `GET`, `SET`, `MGET`, `MSET`, `PING`, `INFO` on LWW
//! keys and `INCR`, `DECR`, `INCRBY`, `DECRBY` on PN-counters (`GET` reads both), so
//! `redis-cli` and `redis-benchmark` work against Squall unchanged.
//!
//! Each connection is served by one task. Every complete command in the read buffer starts at
//! once and the answers are written back in order, so pipelined clients get pipelined service.
//! `SET` values are LWW registers stamped by the front end's client clock; the counting
//! commands add to a PN-counter as the front end's one writer (one add per key at a time, see
//! [`KvClient::add`]); a key holding another lattice type answers `WRONGTYPE`. Requests go
//! through the [`KvClient`] library, straight into the local node when it is one of the key's
//! replicas. A frame that does not parse, or a request larger than the frame limit, gets an
//! error and the connection is closed; the node goes on serving.

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

/// What a command touches, for ordering commands of one pipeline.
#[derive(Debug, Default, PartialEq, Eq)]
struct Footprint {
    /// The keys it reads or writes.
    keys: Vec<Bytes>,
    /// Whether it writes them.
    writes: bool,
    /// Whether it reads every key of the node (`DBSIZE`, `SCAN`).
    every_key: bool,
}

/// What a command touches, read off its name and arguments as `execute` reads them.
fn footprint(frame: &Frame) -> Footprint {
    let Frame::Array(parts) = frame else { return Footprint::default() };
    let arg = |i: usize| match parts.get(i) {
        Some(Frame::BulkString(b) | Frame::SimpleString(b)) => Some(b.clone()),
        _ => None,
    };
    let name = arg(0).map(|n| n.to_ascii_uppercase()).unwrap_or_default();
    let reads = |keys: Vec<Bytes>| Footprint { keys, ..Footprint::default() };
    let writes = |keys: Vec<Bytes>| Footprint { keys, writes: true, every_key: false };
    match name.as_slice() {
        b"GET" | b"TYPE" => reads(arg(1).into_iter().collect()),
        b"SET" | b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" => writes(arg(1).into_iter().collect()),
        b"MGET" | b"EXISTS" => reads((1..parts.len()).filter_map(arg).collect()),
        b"DEL" | b"UNLINK" => writes((1..parts.len()).filter_map(arg).collect()),
        b"MSET" => writes((1..parts.len()).step_by(2).filter_map(arg).collect()),
        b"DBSIZE" | b"SCAN" => Footprint { every_key: true, ..Footprint::default() },
        _ => Footprint::default(),
    }
}

fn is_quit(frame: &Frame) -> bool {
    matches!(frame, Frame::Array(parts) if matches!(parts.first(),
        Some(Frame::BulkString(name)) if name.eq_ignore_ascii_case(b"QUIT")))
}

/// Splits a pipeline into waves that may run concurrently: a command starts a new wave when
/// it writes a key an earlier command of the current wave touches, or touches a key it writes.
/// Waves run one after the other, so a pipeline's effects are those of running it in order.
/// A command reading every key conflicts with any write in the wave, and the other way round.
fn waves(frames: Vec<Frame>) -> Vec<Vec<Frame>> {
    let mut waves: Vec<Vec<Frame>> = Vec::new();
    let mut touched: HashMap<Bytes, bool> = HashMap::new();
    let (mut wrote, mut read_every_key) = (false, false);
    for frame in frames {
        let Footprint { keys, writes, every_key } = footprint(&frame);
        let conflict = keys.iter().any(|k| touched.get(k).is_some_and(|w| *w || writes))
            || (every_key && wrote)
            || (writes && read_every_key);
        if conflict || waves.is_empty() {
            waves.push(Vec::new());
            touched.clear();
            (wrote, read_every_key) = (false, false);
        }
        wrote |= writes;
        read_every_key |= every_key;
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
            let next = match inline(&mut input) {
                Some(line) => Ok(line),
                None => decode_bytes_mut(&mut input).map(|parsed| parsed.map(|(frame, ..)| frame)),
            };
            match next {
                Ok(Some(frame)) => {
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

/// An inline command (a line of words, as typed by hand into `telnet` or `nc`: `PING\r\n`),
/// as the array of bulk strings a client would have sent; `None` if the input is RESP (it
/// starts with a type marker) or empty, `Some(None)` while the line is unfinished. Blank lines
/// are skipped.
fn inline(input: &mut BytesMut) -> Option<Option<Frame>> {
    loop {
        let first = *input.first()?;
        if matches!(first, b'*' | b'$' | b'+' | b'-' | b':') {
            return None;
        }
        let Some(end) = input.iter().position(|b| *b == b'\n') else { return Some(None) };
        let line = input.split_to(end + 1).freeze();
        let words: Vec<Frame> = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|word| !word.is_empty())
            .map(|word| Frame::BulkString(line.slice_ref(word)))
            .collect();
        if !words.is_empty() {
            return Some(Some(Frame::Array(words)));
        }
    }
}

fn encode(output: &mut BytesMut, frame: &Frame) {
    extend_encode(output, frame, false).expect("an extending encode cannot run out of room");
}

fn error(message: impl Into<String>) -> Frame {
    Frame::Error(Str::from(message.into()))
}

fn simple(text: &'static str) -> Frame {
    Frame::SimpleString(Bytes::from_static(text.as_bytes()))
}

/// `SCAN cursor [MATCH pattern] [COUNT n]` over this node's keys, in key order. The cursor is
/// the number of keys looked at so far (`0` to start, and `0` again when done); `COUNT`
/// (default 10) keys are looked at per call and those matching the glob `MATCH` (`*` and `?`)
/// returned. Keys present for a whole scan are returned at least once if no key before them
/// is removed meanwhile.
async fn scan(context: &RespContext, args: &[Bytes]) -> Frame {
    let Some(cursor) = std::str::from_utf8(&args[0]).ok().and_then(|c| c.parse::<usize>().ok())
    else {
        return error("ERR invalid cursor");
    };
    let (mut pattern, mut count) = (None, 10usize);
    let mut options = args[1..].chunks(2);
    for option in options.by_ref() {
        match (String::from_utf8_lossy(&option[0]).to_ascii_uppercase().as_str(), option.get(1)) {
            ("MATCH", Some(glob)) => pattern = Some(glob.clone()),
            ("COUNT", Some(n)) => match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => count = n,
                _ => return error("ERR value is not an integer or out of range"),
            },
            _ => return error("ERR syntax error: SCAN cursor [MATCH pattern] [COUNT count]"),
        }
    }
    let page = context
        .node
        .inspect(move |storage| {
            let store = storage.store();
            // The cursor counts stored keys, deleted ones included, which a page then leaves
            // out: a page may hold fewer than COUNT keys, as Redis allows.
            let page: Vec<_> = store.iter().skip(cursor).take(count).collect();
            let next = cursor + page.len();
            let live = page.into_iter().filter(|(_, value)| holds_value(value));
            (
                live.map(|(key, _)| key.clone()).collect::<Vec<_>>(),
                if next >= store.len() { 0 } else { next },
            )
        })
        .await;
    let Some((seen, next)) = page else { return error("ERR the node is stopping") };
    let keys = seen
        .into_iter()
        .filter(|key| pattern.as_ref().is_none_or(|glob| glob_matches(glob, key.as_bytes())))
        .map(|key| Frame::BulkString(Bytes::from(key)))
        .collect();
    Frame::Array(vec![Frame::BulkString(Bytes::from(next.to_string())), Frame::Array(keys)])
}

/// Whether `text` matches `glob`, where `*` stands for any run of bytes and `?` for one byte
/// (in time proportional to their lengths' product at worst).
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // The last `*` seen, and where in the text its run would end if it took one byte more.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(c) if *c == b'?' || *c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((at, from)) => {
                    (g, t) = (at + 1, from + 1);
                    star = Some((at, from + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == b'*')
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
        ("PING", 2) | ("ECHO", 2) => Frame::BulkString(args[1].clone()),
        ("GET", 2) => match key(&args[1]) {
            Ok(key) => get(context, &key).await,
            Err(e) => e,
        },
        ("SET", 3) => match key(&args[1]) {
            Ok(key) => set(context, &key, args[2].clone()).await,
            Err(e) => e,
        },
        ("INCR", 2) => add(context, &args[1], Ok(1)).await,
        ("DECR", 2) => add(context, &args[1], Ok(-1)).await,
        ("INCRBY", 3) => add(context, &args[1], integer(&args[2])).await,
        ("DECRBY", 3) => {
            let by = integer(&args[2]).and_then(|n| n.checked_neg().ok_or_else(overflow));
            add(context, &args[1], by).await
        }
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
        ("DEL" | "UNLINK", n) if n >= 2 => {
            sum_over_keys(&args[1..], |key| async move {
                match context.client.delete(&key).await {
                    Ok(existed) => Ok(i64::from(existed)),
                    Err(KvError::Rejected(squall_proto::kvs::PutError::TypeMismatch(m))) => {
                        Err(error(format!(
                            "WRONGTYPE {key:?} holds a {} lattice; DEL deletes LWW keys only \
                             (a counter or a set has no write order a delete could follow)",
                            m.stored
                        )))
                    }
                    Err(e) => Err(failure(&e)),
                }
            })
            .await
        }
        ("EXISTS", n) if n >= 2 => {
            sum_over_keys(&args[1..], |key| async move {
                match context.client.get(&key).await {
                    Ok(Some(value)) => Ok(i64::from(holds_value(&value))),
                    Ok(None) => Ok(0),
                    Err(e) => Err(failure(&e)),
                }
            })
            .await
        }
        ("TYPE", 2) => match key(&args[1]) {
            Ok(key) => match context.client.get(&key).await {
                Ok(Some(value)) if !holds_value(&value) => simple("none"),
                Ok(Some(value)) => simple(value.lattice_type().name()),
                Ok(None) => simple("none"),
                Err(e) => failure(&e),
            },
            Err(e) => e,
        },
        ("DBSIZE", 1) => match context
            .node
            .inspect(|storage| storage.store().values().filter(|v| holds_value(v)).count())
            .await
        {
            Some(keys) => Frame::Integer(keys as i64),
            None => error("ERR the node is stopping"),
        },
        ("SCAN", n) if n >= 2 => scan(context, &args[1..]).await,
        ("INFO", 1 | 2) => Frame::BulkString(Bytes::from(info(context).await)),
        ("QUIT", _) => ok(),
        // What redis-cli and redis-benchmark ask on connect: answered harmlessly.
        ("COMMAND" | "CONFIG", _) => Frame::Array(Vec::new()),
        ("SELECT", 2) if args[1].as_ref() == b"0" => ok(),
        ("SELECT", 2) => error("ERR DB index is out of range: Squall has only database 0"),
        ("CLIENT", _) => ok(),
        (
            "GET" | "SET" | "MGET" | "MSET" | "DEL" | "UNLINK" | "INCR" | "DECR" | "INCRBY"
            | "DECRBY" | "EXISTS" | "TYPE" | "DBSIZE" | "SCAN" | "PING" | "ECHO" | "INFO"
            | "SELECT",
            _,
        ) => error(format!("ERR wrong number of arguments for '{}' command", name.to_lowercase())),
        _ => error(format!(
            "ERR unknown command '{}'; Squall serves GET, SET, MGET, MSET, DEL, UNLINK, INCR, \
             DECR, INCRBY, DECRBY, EXISTS, TYPE, DBSIZE, SCAN, PING, ECHO, INFO",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

/// Whether a stored value reads as present: anything but an LWW register without a value (a
/// deleted one, or one never written).
fn holds_value(value: &LatticeValue) -> bool {
    !matches!(value, LatticeValue::Lww(lww) if lww.value().is_none())
}

/// Runs `per_key` on every key at once and answers the sum of their counts, or the first error
/// (the others ran all the same).
async fn sum_over_keys<F, Fut>(keys: &[Bytes], per_key: F) -> Frame
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<i64, Frame>>,
{
    let runs = keys.iter().map(|k| {
        let run = key(k).map(&per_key);
        async move {
            match run {
                Ok(run) => run.await,
                Err(e) => Err(e),
            }
        }
    });
    let counts: Result<Vec<i64>, Frame> =
        futures::future::join_all(runs).await.into_iter().collect();
    counts.map_or_else(|e| e, |counts| Frame::Integer(counts.iter().sum()))
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
        // A counter reads as its value, as Redis answers GET on a key INCR made.
        Ok(Some(LatticeValue::PnCounter(counter))) => {
            Frame::BulkString(Bytes::from(counter.value().to_string()))
        }
        Ok(Some(other)) => error(format!(
            "WRONGTYPE {key:?} holds a {} lattice; the RESP port reads LWW keys and counters \
             only",
            other.lattice_type()
        )),
        Err(e) => failure(&e),
    }
}

/// A signed 64-bit integer argument, as Redis parses one.
fn integer(bytes: &Bytes) -> Result<i64, Frame> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|text| !text.starts_with('+'))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| error("ERR value is not an integer or out of range"))
}

fn overflow() -> Frame {
    error("ERR increment or decrement would overflow")
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: adds `by` to the PN-counter `key` and answers the
/// counter's value as [`KvClient::add`] knows it after the add.
async fn add(context: &RespContext, key_bytes: &Bytes, by: Result<i64, Frame>) -> Frame {
    let (key, by) = match (key(key_bytes), by) {
        (Ok(key), Ok(by)) => (key, by),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match context.client.add(&key, by).await {
        Ok(value) => Frame::Integer(value),
        Err(KvError::Rejected(squall_proto::kvs::PutError::TypeMismatch(m))) => error(format!(
            "WRONGTYPE {key:?} holds a {} lattice; INCR and DECR count on pn-counter keys \
             (a key SET made is an LWW register)",
            m.stored
        )),
        Err(KvError::Overflow { .. }) => overflow(),
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
            let deleted = storage.store().values().filter(|v| !holds_value(v)).count();
            (
                storage.store().len() - deleted,
                deleted,
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
    if let Some((keys, deleted, incarnation, epoch, members)) = state {
        text.push_str(&format!(
            "incarnation:{incarnation}\r\nring_epoch:{epoch}\r\nring_members:{members}\r\n\
             # Keyspace\r\nkeys:{keys}\r\ntombstones:{deleted}\r\n"
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

    #[test]
    fn globs_match_runs_and_single_bytes() {
        for (glob, text, matches) in [
            ("*", "", true),
            ("user:*", "user:42", true),
            ("user:*", "users", false),
            ("?:*:?", "a:bc:d", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(glob_matches(glob.as_bytes(), text.as_bytes()), matches, "{glob} {text}");
        }
    }

    #[test]
    fn a_whole_keyspace_read_waits_for_earlier_writes_and_holds_back_later_ones() {
        let pipeline = vec![
            command(&["SET", "a", "1"]),
            command(&["GET", "b"]),
            command(&["DBSIZE"]),
            command(&["EXISTS", "c"]),
            command(&["SCAN", "0"]),
            command(&["SET", "d", "1"]),
        ];
        assert_eq!(
            names(&waves(pipeline)),
            [vec!["SET a 1", "GET b"], vec!["DBSIZE", "EXISTS c", "SCAN 0"], vec!["SET d 1"]]
        );
    }

    #[test]
    fn inline_commands_are_read_as_arrays_and_resp_is_left_alone() {
        let mut input = BytesMut::from(&b"PING\r\n\r\n  echo   hi \nSET a"[..]);
        assert_eq!(inline(&mut input), Some(Some(command(&["PING"]))));
        // A blank line is skipped; words split on any whitespace, a bare \n ends a line.
        assert_eq!(inline(&mut input), Some(Some(command(&["echo", "hi"]))));
        assert_eq!(inline(&mut input), Some(None), "an unfinished line waits");
        assert_eq!(&input[..], b"SET a");
        let mut resp = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(inline(&mut resp), None);
        assert_eq!(inline(&mut BytesMut::new()), None);
    }

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
    fn counting_commands_write_their_key() {
        let pipeline = vec![
            command(&["INCR", "n"]),
            command(&["incrby", "n", "2"]),
            command(&["GET", "n"]),
            command(&["DECR", "m"]),
            command(&["DECRBY", "n", "1"]),
        ];
        assert_eq!(
            names(&waves(pipeline)),
            [vec!["INCR n"], vec!["incrby n 2"], vec!["GET n", "DECR m"], vec!["DECRBY n 1"]]
        );
    }

    #[test]
    fn a_delete_writes_every_key_it_names() {
        let pipeline = vec![
            command(&["SET", "a", "1"]),
            command(&["GET", "z"]),
            command(&["DEL", "z", "b"]),
            command(&["EXISTS", "a"]),
            command(&["unlink", "a"]),
            command(&["DBSIZE"]),
        ];
        assert_eq!(
            names(&waves(pipeline)),
            [
                vec!["SET a 1", "GET z"],
                vec!["DEL z b", "EXISTS a"],
                vec!["unlink a"],
                vec!["DBSIZE"]
            ]
        );
    }

    #[test]
    fn integer_arguments_are_what_redis_takes() {
        assert_eq!(integer(&Bytes::from_static(b"-42")), Ok(-42));
        assert_eq!(integer(&Bytes::from_static(b"9223372036854775807")), Ok(i64::MAX));
        for bad in [&b"9223372036854775808"[..], b"1.5", b"", b" 1", b"x", b"+5"] {
            assert!(integer(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
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
