//! The functions half of the cluster end to end on loopback: a scheduler and two workers
//! (each a cache, its session layer and two executor threads) over three storage nodes, all
//! the `squall-proto` state machines on the generic runtime.

mod common;

use std::sync::Arc;
use std::time::Duration;

use squall_cluster::config::ClusterConfig;
use squall_cluster::exec::{FnError, NativeFn, Registry, Value};
use squall_cluster::faas::{DagSpec, FaasError, FnClient};
use squall_cluster::local::LocalCluster;
use squall_proto::session::Level;

/// A three-node configuration on free ports with a scheduler and two workers.
fn faas_config(name: &str) -> ClusterConfig {
    let mut text = common::config_text(name, 3, 0, 3);
    text.push_str(
        "[functions]\ndeadline_ms = 300\ndeadline_ticks = 4\nattempts = 3\nmax_arg_bytes = 65536\n",
    );
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < 3 {
        ports.insert(common::free_port());
    }
    let mut ports = ports.into_iter();
    text.push_str(&format!(
        "[scheduler]\nid = 100\nrpc = \"127.0.0.1:{}\"\n",
        ports.next().expect("port")
    ));
    for id in [200, 201] {
        text.push_str(&format!(
            "[[worker]]\nid = {id}\nrpc = \"127.0.0.1:{}\"\n",
            ports.next().expect("port")
        ));
    }
    ClusterConfig::parse(&text).expect("valid test configuration")
}

/// Functions only these tests need: one that panics, one that sleeps.
fn test_registry() -> Registry {
    Registry::builtin()
        .with(NativeFn {
            name: "boom",
            about: "panics",
            arity: 1,
            key_args: &[],
            body: |_, _| panic!("boom"),
        })
        .with(NativeFn {
            name: "nap",
            about: "sleeps n milliseconds; returns n",
            arity: 1,
            key_args: &[],
            body: |_, args| {
                let ms = args[0].as_int().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms as u64));
                Ok(args[0].clone())
            },
        })
        .with(NativeFn {
            name: "fail",
            about: "fails",
            arity: 1,
            key_args: &[],
            body: |_, _| Err(FnError::Failed("no".into())),
        })
}

async fn cluster(name: &str) -> (ClusterConfig, LocalCluster, FnClient) {
    let config = faas_config(name);
    let registry = test_registry();
    let cluster = LocalCluster::start_with(&config, Arc::new(registry.clone()))
        .await
        .expect("cluster starts");
    let client = FnClient::new(&config, registry).expect("client");
    (config, cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_and_a_composition_answer_at_every_level() {
    let (_, cluster, client) = cluster("faas-levels").await;
    let answer = client.call_fn("increment", vec![Value::Int(41)], Level::Lww, &[]).await;
    assert_eq!(answer.expect("increment answers"), Value::Int(42));
    let spec = DagSpec::parse(&["increment -> square".into()], &[]).expect("valid DAG");
    client.register_dag("sq", &spec).await.expect("registered");
    for level in Level::ALL {
        let answer = client.call_dag("sq", vec![Value::Int(3)], level).await;
        assert_eq!(answer.expect("the DAG answers"), Value::Int(16), "at {level}");
    }
    cluster.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_read_and_write_keys_at_every_level() {
    let (_, cluster, client) = cluster("faas-keys").await;
    for level in Level::ALL {
        let key = format!("hits-{level}");
        for expected in 1..=3 {
            let answer =
                client.call_fn("counter", vec![Value::Text(key.clone())], level, &[]).await;
            assert_eq!(answer.expect("counter answers"), Value::Int(expected), "at {level}");
        }
        // A reference to a key is resolved by the worker at the call's level.
        let answer = client.call_fn("increment", vec![Value::Key(key.clone())], level, &[]).await;
        assert_eq!(answer.expect("increment of a key answers"), Value::Int(4), "at {level}");
        let answer =
            client.call_fn("rmw", vec![Value::Text(key.clone()), Value::Int(10)], level, &[]);
        assert_eq!(answer.await.expect("rmw answers"), Value::Int(13), "at {level}");
    }
    // What a function wrote is in the KVS, as decimal text.
    let stored = client.kv().get("hits-lww").await.expect("read").expect("present");
    assert_eq!(Value::from_stored(&Some(stored)), Value::Int(13));
    cluster.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_the_workers_keep_serving() {
    let (_, cluster, client) = cluster("faas-errors").await;
    let unknown = client.call_fn("nope", vec![], Level::Lww, &[]).await;
    assert!(matches!(unknown, Err(FaasError::UnknownFunction(name)) if name == "nope"));
    let arity = client.call_fn("add", vec![Value::Int(1)], Level::Lww, &[]).await;
    assert!(
        matches!(&arity, Err(FaasError::BadArguments(m)) if m.contains("takes 2")),
        "{arity:?}"
    );
    let cyclic = DagSpec::parse(&["increment -> square -> increment".into()], &[]);
    assert!(matches!(cyclic, Err(FaasError::Dag(_))), "{cyclic:?}");
    let two_sinks =
        DagSpec::parse(&["increment -> square".into(), "increment -> echo".into()], &[]);
    assert!(matches!(two_sinks, Err(FaasError::Dag(_))), "{two_sinks:?}");
    let unregistered = client.call_dag("no-such-dag", vec![], Level::Lww).await;
    assert!(matches!(unregistered, Err(FaasError::UnknownDag(_))), "{unregistered:?}");
    let text = client.call_fn("increment", vec![Value::Text("x".into())], Level::Lww, &[]).await;
    assert!(
        matches!(&text, Err(FaasError::Failed { reason, .. }) if reason.contains("not an integer")),
        "{text:?}"
    );
    let panic = client.call_fn("boom", vec![Value::Nil], Level::Lww, &[]).await;
    assert!(
        matches!(&panic, Err(FaasError::Failed { reason, .. }) if reason.contains("panicked")),
        "{panic:?}"
    );
    let big = vec![Value::Text("x".repeat(70_000))];
    let too_large = client.call_fn("echo", big, Level::Lww, &[]).await;
    assert!(matches!(too_large, Err(FaasError::TooLarge { .. })), "{too_large:?}");
    let overflow = client.call_fn("square", vec![Value::Int(i64::MAX)], Level::Lww, &[]).await;
    assert!(matches!(overflow, Err(FaasError::Failed { .. })), "{overflow:?}");
    // Every executor survived.
    for n in 0..8 {
        let answer = client.call_fn("increment", vec![Value::Int(n)], Level::Lww, &[]).await;
        assert_eq!(answer.expect("still serving"), Value::Int(n + 1));
    }
    cluster.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_dag_is_retried_elsewhere_and_answered_once() {
    let (_, mut cluster, client) = cluster("faas-kill").await;
    let client = Arc::new(client);
    // The first attempt runs `nap` on worker 200 and `increment` on 201.
    let spec = DagSpec::parse(&["nap -> increment".into()], &[]).expect("valid DAG");
    client.register_dag("slow", &spec).await.expect("registered");
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call_dag("slow", vec![Value::Int(300)], Level::Dsrr).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let victim = cluster.workers.remove(0);
    victim.kill();
    let answer = call.await.expect("joined");
    assert_eq!(answer.expect("answered by a retry"), Value::Int(301));
    let scheduler = cluster.scheduler.as_ref().expect("scheduler");
    let (recorded, attempts) = scheduler
        .handle()
        .inspect(|s| {
            let attempts: Vec<u32> = s.requests().values().map(|r| r.attempts).collect();
            (s.recorded().len(), attempts)
        })
        .await
        .expect("running");
    // Only the one DAG call went through the scheduler: one result recorded, after a retry.
    assert_eq!(recorded, 1);
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0] >= 2, "{attempts:?}");
    cluster.stop().await.expect("stops");
}
