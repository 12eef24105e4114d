//! docs/wire.md against the code: its message tables are the enums' variants in declaration
//! order (postcard's variant index), rendered from the sources; its test vectors are the bytes
//! the wire's encoder writes. A change to a message type fails here until the spec changes
//! too (and, for an encoded type, [`PROTOCOL_VERSION`] is raised).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use squall_cluster::rpc::{PROTOCOL_VERSION, encode, encoded_len};
use squall_proto::NodeId;
use squall_proto::kvs::{Durability, KvsMsg, PutError};
use squall_proto::lattice::{LatticeType, LatticeValue, Lww, PnCounter, Stamp, WriterId};
use squall_proto::session::{Dag, Level, Pinned, SessionId, SessionMsg};

/// The enums docs/wire.md tabulates: (source file under impl/src, enum).
const TABLES: [(&str, &str); 13] = [
    ("worker/mod.rs", "SystemMsg"),
    ("kvs/msg.rs", "KvsMsg"),
    ("kvs/msg.rs", "Op"),
    ("kvs/msg.rs", "Outcome"),
    ("kvs/msg.rs", "Durability"),
    ("kvs/msg.rs", "PutError"),
    ("kvs/msg.rs", "Failure"),
    ("node.rs", "Refusal"),
    ("lattice/value.rs", "LatticeValue"),
    ("session/mod.rs", "SessionMsg"),
    ("session/mod.rs", "Pinned"),
    ("session/mod.rs", "Level"),
    ("worker/mod.rs", "ExecMsg"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace")
}

fn spec() -> String {
    std::fs::read_to_string(repo().join("docs/wire.md")).expect("docs/wire.md")
}

/// The body of `pub enum NAME { ... }` in `source`, comments and attributes left out.
fn enum_body(source: &str, name: &str) -> String {
    let start = source.find(&format!("pub enum {name} ")).expect("the enum is declared");
    let open = start + source[start..].find('{').expect("a body");
    let mut depth = 0;
    let mut end = open;
    for (i, c) in source[open..].char_indices() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if depth == 0 {
            end = open + i;
            break;
        }
    }
    source[open + 1..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with("#["))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The variants of an enum body: (name, fields as declared, `None` for a unit variant).
fn variants(body: &str) -> Vec<(String, Option<String>)> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_uppercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_alphanumeric() {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i] == ' ' {
            i += 1;
        }
        let fields = match chars.get(i) {
            Some(&open @ ('{' | '(')) => {
                let (from, mut depth) = (i + 1, 0);
                loop {
                    depth += match chars[i] {
                        '{' | '(' | '<' | '[' => 1,
                        '}' | ')' | '>' | ']' => -1,
                        _ => 0,
                    };
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                let inner: String = chars[from..i - 1].iter().collect();
                let inner = inner.split_whitespace().collect::<Vec<_>>().join(" ");
                let inner = without_attributes(inner.trim_end_matches(',').trim());
                let inner = inner.replace("pub ", "");
                Some(if open == '(' { format!("({inner})") } else { inner })
            }
            _ => None,
        };
        out.push((name, fields));
        // Past the separating comma.
        while i < chars.len() && chars[i] != ',' {
            i += 1;
        }
    }
    out
}

/// `text` without its `#[...]` attributes.
fn without_attributes(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[") {
        out.push_str(&rest[..at]);
        let close = rest[at..].find(']').map_or(rest.len(), |c| at + c + 1);
        rest = rest[close..].trim_start();
    }
    out.push_str(rest);
    out
}

/// The table docs/wire.md must hold for `name`.
fn table(file: &str, name: &str) -> String {
    let source =
        std::fs::read_to_string(repo().join("impl/src").join(file)).expect("the enum's source");
    let mut out =
        format!("`{name}` (impl/src/{file}):\n\n| index | variant | fields |\n|---|---|---|\n");
    for (i, (variant, fields)) in variants(&enum_body(&source, name)).iter().enumerate() {
        let fields =
            fields.as_ref().map_or("—".to_owned(), |f| format!("`{}`", f.replace('|', "\\|")));
        out.push_str(&format!("| {i} | `{variant}` | {fields} |\n"));
    }
    out
}

#[test]
fn the_message_tables_are_the_declared_variants_in_order() {
    let spec = spec();
    let missing: Vec<String> = TABLES
        .iter()
        .map(|(file, name)| table(file, name))
        .filter(|t| !spec.contains(t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/wire.md does not hold these tables as the code declares them:\n\n{}",
        missing.join("\n")
    );
}

/// The test vectors: a name and a message, encoded as the wire encodes it.
fn vectors() -> Vec<(&'static str, Bytes)> {
    let k = |s: &str| s.to_owned();
    let lww = LatticeValue::Lww(Lww::new(Stamp::new(300, WriterId(2)), Bytes::from_static(b"hi")));
    let counter = LatticeValue::PnCounter(PnCounter::new([(WriterId(1), 5, 2)]));
    let dag = Dag::chain(&[&["x"]]).expect("a DAG");
    let session = SessionId { scheduler: NodeId(0), seq: 5 };
    let mismatch = PutError::mismatch(LatticeType::Lww, LatticeType::PnCounter);
    vec![
        ("kvs-get", encode(KvsMsg::Get { req: 1, key: k("k") })),
        ("kvs-get-ok-none", encode(KvsMsg::GetOk { req: 1, value: None })),
        ("kvs-get-ok-lww", encode(KvsMsg::GetOk { req: 1, value: Some(lww.clone()) })),
        (
            "kvs-put-lww-majority",
            encode(KvsMsg::Put {
                req: 7,
                key: k("k"),
                value: lww,
                durability: Durability::Majority,
            }),
        ),
        (
            "kvs-put-counter-one",
            encode(KvsMsg::Put {
                req: 8,
                key: k("c"),
                value: counter,
                durability: Durability::One,
            }),
        ),
        ("kvs-put-ok", encode(KvsMsg::PutOk { req: 7 })),
        ("kvs-put-rejected", encode(KvsMsg::PutRejected { req: 8, error: mismatch })),
        ("kvs-hello", encode(KvsMsg::Hello { incarnation: 3 })),
        ("session-call", encode(SessionMsg::Call { req: 2, level: Level::Dsc, dag, args: vec![] })),
        (
            "session-fetched-absent",
            encode(SessionMsg::Fetched { session, key: k("x"), pinned: Pinned::Absent }),
        ),
    ]
    .into_iter()
    .map(|(name, bytes)| (name, bytes.expect("encodes")))
    .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn the_test_vectors_are_what_the_encoder_writes() {
    let spec = spec();
    let rows: Vec<String> =
        vectors().iter().map(|(name, bytes)| format!("| `{name}` | `{}` |", hex(bytes))).collect();
    let missing: Vec<&String> = rows.iter().filter(|row| !spec.contains(row.as_str())).collect();
    assert!(
        missing.is_empty(),
        "docs/wire.md's test vectors differ from the encoder; these rows are not in it:\n{}\n\n\
         (the whole table as the code writes it:\n{})",
        missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("\n"),
        rows.join("\n")
    );
    let listed = spec.lines().filter(|l| l.starts_with("| `kvs-") || l.starts_with("| `session-"));
    assert_eq!(listed.count(), rows.len(), "docs/wire.md lists a vector the test does not check");
    for (_, bytes) in vectors() {
        assert_eq!(bytes[0], PROTOCOL_VERSION, "every payload opens with the version");
    }
    assert!(spec.contains(&format!("`PROTOCOL_VERSION` = {PROTOCOL_VERSION}")), "the version");
}

#[test]
fn the_encoded_length_is_known_without_encoding() {
    let lww = LatticeValue::Lww(Lww::new(Stamp::new(300, WriterId(2)), Bytes::from(vec![7; 300])));
    let put = KvsMsg::Put { req: 9, key: "k".to_owned(), value: lww, durability: Durability::All };
    let bytes = encode(put.clone()).expect("encodes");
    assert_eq!(encoded_len(put).expect("sized"), bytes.len());
}

/// docs/wire.md's envelope vectors: a request as a client writes it (read back here, since its
/// deadline is written as the time left, which no two encodings share) and the answer.
const ENVELOPE_REQUEST: &str =
    "00 0a 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 01 02";
const ENVELOPE_RESPONSE: &str = "01 00 02 03";

fn unhex(text: &str) -> Vec<u8> {
    text.split(' ').map(|b| u8::from_str_radix(b, 16).expect("hex")).collect()
}

#[test]
fn the_envelope_vectors_are_what_tarpc_reads_and_writes() {
    use squall_cluster::rpc::{SquallRequest, SquallResponse};
    let spec = spec();
    for vector in [ENVELOPE_REQUEST, ENVELOPE_RESPONSE] {
        assert!(spec.contains(&format!("`{vector}`")), "docs/wire.md lists {vector}");
    }
    let request: tarpc::ClientMessage<SquallRequest> =
        postcard::from_bytes(&unhex(ENVELOPE_REQUEST)).expect("a request");
    let tarpc::ClientMessage::Request(request) = request else { panic!("{request:?}") };
    assert_eq!(request.id, 1);
    assert!(matches!(request.message, SquallRequest::Ping {}), "{:?}", request.message);
    let left = request.context.deadline.saturating_duration_since(std::time::Instant::now());
    assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10), "{left:?}");
    assert_eq!(request.context.trace_context, tarpc::trace::Context::default());
    let response = tarpc::Response { request_id: 1, message: Ok(SquallResponse::Ping(NodeId(3))) };
    assert_eq!(hex(&postcard::to_allocvec(&response).expect("encodes")), ENVELOPE_RESPONSE);
}
