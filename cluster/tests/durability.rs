//! Durability against real processes: `squall up` killed whole with SIGKILL under a
//! majority-write load, then started again over the same data directory. Every acknowledged
//! write must be there, judged by `squall-verify`'s checkers (and counted outright).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Recorder, config_text};
use squall_cluster::client::KvClient;
use squall_cluster::config::ClusterConfig;
use squall_proto::NodeId;
use squall_verify::check;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Keys every writer overwrites (so versions compete), beside the keys written once.
const SHARED: usize = 8;

/// Starts `squall up` on `config_path` and waits until it says it is up; returns the process
/// and the lines it printed (which include each node's recovery line).
async fn up(config_path: &std::path::Path) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_squall"))
        .arg("--config")
        .arg(config_path)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn squall up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("squall up did not come up in 30 s")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("squall up exited early; it printed: {seen:#?}"));
        let done = line.contains("Ctrl-C stops the cluster");
        seen.push(line);
        if done {
            break;
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

/// Writers putting keys at majority until `stop`: every other put to a key written once.
fn workload(
    config: &ClusterConfig,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    writers: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|session| {
            let (recorder, stop, client) = (recorder.clone(), stop.clone(), KvClient::new(config));
            tokio::spawn(async move {
                let mut n = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = if n.is_multiple_of(2) {
                        format!("s{}", (n / 2 + session as usize) % SHARED)
                    } else {
                        format!("u{session}-{n}")
                    };
                    let _ = recorder.put(&client, session, &key).await;
                }
            })
        })
        .collect()
}

/// What each node's own replica holds of `keys`, read through that node.
async fn read_all(config: &ClusterConfig, keys: &[String]) -> Vec<BTreeMap<String, bool>> {
    let mut views = Vec::new();
    for node in &config.nodes {
        let client = KvClient::new(config).with_targets(vec![NodeId(node.id)]);
        let mut view = BTreeMap::new();
        for key in keys {
            let held = matches!(client.get(key).await, Ok(Some(_)));
            view.insert(key.clone(), held);
        }
        views.push(view);
    }
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_killed_whole_with_sigkill_keeps_every_acknowledged_write() {
    let text = config_text("sigkill", 3, 0, 3);
    let config = ClusterConfig::parse(&text).expect("valid");
    let dir = config.cluster.data_dir.clone();
    std::fs::create_dir_all(&dir).expect("data dir");
    let config_path = dir.join("squall.toml");
    std::fs::write(&config_path, &text).expect("write config");

    let (mut first, printed) = up(&config_path).await;
    // Its start-up hints name this configuration and its first RESP port.
    let resp = config.nodes[0].resp.expect("a RESP port");
    let hint = printed.iter().find(|line| line.starts_with("try:")).expect("a hint");
    assert!(hint.contains(&format!("squall --config {} kv put", config_path.display())), "{hint}");
    assert!(hint.contains(&format!("redis-cli -h {} -p {}", resp.ip(), resp.port())), "{hint}");
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(&config, &recorder, &stop, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL, mid-load: no graceful stop, no flush, puts in flight.
    first.kill().await.expect("SIGKILL squall up");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    let (acked, failed, unknown) = recorder.write_outcomes();
    assert!(
        acked > 50,
        "a real load ran: {acked} acknowledged ({failed} failed, {unknown} unknown)"
    );

    let (mut second, printed) = up(&config_path).await;
    let recovered: usize = printed
        .iter()
        .filter_map(|line| {
            line.split("recovered ").nth(1)?.split(' ').next()?.parse::<usize>().ok()
        })
        .sum();
    assert!(recovered > 0, "the restarted nodes say what they recovered: {printed:#?}");

    // Wait until the replicas agree (a replica that missed a majority write before the kill
    // gets it back by gossip), then read every key through every node.
    let keys: Vec<String> = recorder.written_keys();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views = read_all(&config, &keys).await;
        if views.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_at = recorder.now();
    for node in &config.nodes {
        let client = KvClient::new(&config).with_targets(vec![NodeId(node.id)]);
        for key in &keys {
            recorder.get(&client, 1000 + node.id, key).await.expect("late read");
        }
    }
    let missing = recorder.acknowledged_but_unread(settled_at);
    assert!(missing.is_empty(), "acknowledged writes missing after the restart: {missing:?}");
    let history = recorder.history(&[], Some(settled_at));
    if let Err(anomaly) = check::all(&history) {
        panic!("{anomaly}\nhistory:\n{}", history.to_jsonl());
    }
    second.kill().await.expect("stop the second squall up");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node whose disk is below its reserve refuses puts, definitely and saying why, and keeps
/// serving reads of what it recovered from that disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_short_of_disk_refuses_puts_and_serves_reads() {
    let mut config = common::config("disk-full", 1, 0, 1);
    let client = KvClient::new(&config);
    let node = common::start(&config, 0).await;
    client.put("kept", client.lww(bytes::Bytes::from_static(b"v"))).await.expect("put");
    node.stop().await.expect("stop");

    // No file system has this much free space: the node is "full" from its first measure.
    config.limits.min_free_disk_bytes = u64::MAX;
    let node = common::start(&config, 0).await;
    assert_eq!(node.recovered.keys, 1, "{}", node.recovered);
    let client = KvClient::new(&config);
    let read = client.get("kept").await.expect("reads are served");
    assert!(read.is_some(), "the recovered key is read back");
    let err = client.put("new", client.lww(bytes::Bytes::from_static(b"v"))).await.unwrap_err();
    assert!(err.is_definite(), "a refused put certainly did not happen: {err}");
    assert!(err.to_string().contains("disk is full"), "the error says why: {err}");
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(&config.cluster.data_dir);
}

/// A node whose data directory is lost (a replaced disk) comes back empty, at an incarnation
/// newer than any its peers knew (its start time), and its peers send it every key again. A
/// node that came back at incarnation 1 would be ignored by peers that knew a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_directory_was_lost_is_repopulated_by_its_peers() {
    let config = common::config("lost-disk", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(common::start(&config, id).await);
    }
    let client = KvClient::new(&config);
    for i in 0..40 {
        let value = client.lww(bytes::Bytes::from(format!("v{i}")));
        client.put(&format!("k{i}"), value).await.expect("put");
    }
    let before = nodes[2].handle().inspect(|s| s.incarnation()).await.expect("live");
    nodes.pop().expect("node 2").kill();
    std::fs::remove_dir_all(config.data_path(2)).expect("lose node 2's disk");
    // Incarnations from the clock move on once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let node = common::start(&config, 2).await;
    assert_eq!(node.recovered.keys, 0, "the disk was lost: {}", node.recovered);
    let after = node.handle().inspect(|s| s.incarnation()).await.expect("live");
    assert!(after > before, "incarnation {after} is newer than {before}");
    nodes.push(node);
    let live: Vec<_> = nodes.iter().collect();
    let stores = common::quiesce(&live, Duration::from_secs(20)).await;
    assert_eq!(stores[2].len(), 40, "the peers sent node 2 every key again");
    for node in nodes {
        node.stop().await.expect("stop");
    }
    let _ = std::fs::remove_dir_all(&config.cluster.data_dir);
}

/// `squall --config FILE config` checks the file and prints it; a bad file is named with what
/// is wrong, once; the overrides, which change a file's use and not its text, are refused.
#[test]
fn squall_config_prints_a_checked_file_and_refuses_overrides() {
    let squall = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_squall")).args(args).output().expect("run")
    };
    let dir = std::env::temp_dir().join(format!("squall-config-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.toml");
    let text = config_text("config-cmd", 1, 0, 1);
    std::fs::write(&good, &text).expect("write");
    let out = squall(&["--config", good.to_str().expect("utf-8"), "config"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), text.trim_end());

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[cluster]\nreplication = \"x\"\n").expect("write");
    let out = squall(&["--config", bad.to_str().expect("utf-8"), "config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains(bad.to_str().expect("utf-8")), "{stderr}");
    assert_eq!(stderr.matches("TOML parse error").count(), 1, "{stderr}");

    let out = squall(&["--data-dir", "/tmp/elsewhere", "config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir and --sync"));
    let _ = std::fs::remove_dir_all(&dir);
}
