//! Fault tests on a loopback cluster, judged by `squall-verify`'s checkers: a storage node
//! killed and restarted under concurrent writes, and a node joining then another leaving under
//! load. Acknowledged writes must survive, replicas must converge, and reads after settling
//! must see the settled values.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Recorder, agree, config, late_reads, quiesce, start, take, walk};
use squall_cluster::client::{ClientSettings, KvClient, LeaveOutcome};
use squall_cluster::config::ClusterConfig;
use squall_proto::NodeId;
use squall_verify::check;
use tokio::task::JoinHandle;

/// `writers` sessions writing (and now and then reading) keys until `stop`; every second
/// write is to a key nobody writes again.
fn workload(
    config: &ClusterConfig,
    recorder: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    writers: u64,
) -> Vec<JoinHandle<()>> {
    (0..writers)
        .map(|session| {
            let (recorder, stop) = (recorder.clone(), stop.clone());
            let client = KvClient::new(config);
            tokio::spawn(async move {
                for step in walk(session, 2) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    take(&recorder, &client, session, step).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_node_loses_no_acknowledged_write() {
    let config = config("kill-restart", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(Some(start(&config, id).await));
    }
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(&config, &recorder, &stop, 4);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let before_kill = recorder.write_outcomes().0;
    let first_incarnation =
        nodes[1].as_ref().expect("node 1").handle().inspect(|s| s.incarnation()).await;
    nodes[1].take().expect("node 1").kill();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let during_outage = recorder.write_outcomes().0 - before_kill;
    nodes[1] = Some(start(&config, 1).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("workload task");
    }

    let live: Vec<_> = nodes.iter().map(|n| n.as_ref().expect("running")).collect();
    let stores = quiesce(&live, Duration::from_secs(20)).await;
    let settled_at = late_reads(&config, &recorder, &[0, 1, 2]).await;
    let settled: Vec<_> = (0..3).zip(stores).collect();
    let history = recorder.history(&settled, Some(settled_at));
    let (acked, failed, unknown) = recorder.write_outcomes();
    assert!(before_kill > 0, "writes were acknowledged before the kill");
    assert!(during_outage > 0, "majority writes go on with one node of three down");
    assert!(
        acked > 50,
        "a real workload ran: {acked} acknowledged ({failed} failed, {unknown} unknown)"
    );
    if let Err(anomaly) = check::all(&history) {
        panic!("{anomaly}\nhistory:\n{}", history.to_jsonl());
    }
    let incarnation = live[1].handle().inspect(|s| s.incarnation()).await;
    assert!(incarnation > first_incarnation, "the restarted node came back as a new incarnation");
    for node in nodes.into_iter().flatten() {
        node.stop().await.expect("graceful stop");
    }
}

/// Replication held back, then the coordinator lost: node 0 coordinates majority puts, then
/// is cut off from the key's other replicas while it coordinates one more, and is killed for
/// good right after that put ends. No other replica could hold that put, so it must not have
/// been acknowledged; every put that was must be on both survivors. A coordinator that
/// acknowledges before replicas hold a write fails this on every run, not by chance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_acknowledged_before_its_coordinator_dies_is_on_the_survivors() {
    let config = config("coordinator-loss", 3, 0, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let recorder = Recorder::new();
    let mut settings = ClientSettings::from_config(&config);
    (settings.timeout, settings.attempts) = (Duration::from_millis(300), 2);
    let client = KvClient::new(&config).with_targets(vec![NodeId(0)]).with_settings(settings);
    let keys: Vec<String> = (0..8).map(|i| format!("before-{i}")).collect();
    for key in &keys {
        recorder.put(&client, 0, key).await.expect("a healthy cluster acknowledges");
    }
    nodes[0].handle().cut_off([NodeId(1), NodeId(2)]);
    let held_back = recorder.put(&client, 0, "held-back").await;
    nodes.remove(0).kill();

    let survivors: Vec<_> = nodes.iter().collect();
    let stores = agree(&survivors, Duration::from_secs(10)).await;
    let settled_at = recorder.now();
    for id in [1, 2] {
        let reader = KvClient::new(&config).with_targets(vec![NodeId(id)]);
        for key in keys.iter().map(String::as_str).chain(["held-back"]) {
            recorder.get(&reader, 10 + id, key).await.expect("a survivor answers");
        }
    }
    let settled: Vec<_> = [1, 2].into_iter().zip(stores).collect();
    let history = recorder.history(&settled, Some(settled_at));
    if let Err(anomaly) = check::all(&history) {
        panic!("{anomaly}\nhistory:\n{}", history.to_jsonl());
    }
    assert!(
        held_back.is_err(),
        "a majority put was acknowledged while no other replica could hold it"
    );
    for node in nodes {
        node.stop().await.expect("graceful stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_leaves_under_load_without_losing_writes() {
    let config = config("join-leave", 3, 1, 3);
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(start(&config, id).await);
    }
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(&config, &recorder, &stop, 4);

    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes.push(start(&config, 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let operator = KvClient::new(&config);
    let outcome = operator.leave(NodeId(0), Duration::from_secs(20)).await.expect("leave");
    assert_eq!(outcome, LeaveOutcome::Left);
    let leaver = nodes.remove(0);
    leaver.stop().await.expect("the node that left stops");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("workload task");
    }

    let live: Vec<_> = nodes.iter().collect();
    let stores = quiesce(&live, Duration::from_secs(20)).await;
    for node in &live {
        let members = node.handle().inspect(|s| s.ring().members().clone()).await.expect("member");
        let ids: Vec<u64> = members.iter().map(|n| n.0).collect();
        assert_eq!(ids, [1, 2, 3], "every remaining node sees the new ring");
    }
    let settled_at = late_reads(&config, &recorder, &[1, 2, 3]).await;
    let settled: Vec<_> = [1, 2, 3].into_iter().zip(stores).collect();
    let history = recorder.history(&settled, Some(settled_at));
    let (acked, _, _) = recorder.write_outcomes();
    assert!(acked > 50, "a real workload ran: {acked} writes acknowledged");
    if let Err(anomaly) = check::all(&history) {
        panic!("{anomaly}\nhistory:\n{}", history.to_jsonl());
    }
    for node in nodes {
        node.stop().await.expect("graceful stop");
    }
}

/// The checkers judging these tests can fail: a history whose replicas settled on an older
/// version than an acknowledged write, or lack its key (which the recorder writes as version
/// 0, the initial value), is reported as a lost write.
#[test]
fn the_judge_reports_a_lost_acknowledged_write() {
    use squall_verify::history::{Held, History, INITIAL, Level, Op};
    let judged = |versions: [u64; 2]| {
        let mut history = History::default();
        history.ops.push(Op::write(0, 0, Level::Majority, "k", 2));
        history.ops.push(Op::write(0, 1, Level::Majority, "k", 1));
        history.settled = (0..2)
            .zip(versions)
            .map(|(replica, version)| Held { replica, key: "k".into(), version })
            .collect();
        check::lost_write(&history).map_err(|anomaly| anomaly.check)
    };
    assert_eq!(judged([2, 2]), Ok(()));
    assert_eq!(judged([2, 1]), Err("lost-write"));
    assert_eq!(judged([2, INITIAL]), Err("lost-write"));
    assert_eq!(judged([INITIAL, INITIAL]), Err("lost-write"));
}
