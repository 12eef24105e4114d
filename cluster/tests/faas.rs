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

/// A three-node configuration on free ports with a scheduler and two workers, placing DAG
/// functions by `placement`.
fn faas_config(name: &str, placement: &str) -> ClusterConfig {
    let mut text = common::config_text(name, 3, 0, 3);
    text.push_str(&format!(
        "[functions]\ndeadline_ms = 300\ndeadline_ticks = 4\nattempts = 3\nmax_arg_bytes = 65536\n\
         wasm_fuel = 10000000\nplacement = {placement:?}\n"
    ));
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

/// A cluster whose sessions span both workers (function *i* on worker *i*).
async fn cluster(name: &str) -> (ClusterConfig, LocalCluster, FnClient) {
    cluster_placed(name, "spread").await
}

async fn cluster_placed(name: &str, placement: &str) -> (ClusterConfig, LocalCluster, FnClient) {
    let config = faas_config(name, placement);
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
async fn local_placement_runs_a_dag_on_one_worker() {
    let (_, cluster, client) = cluster_placed("faas-local", "local").await;
    let spec = DagSpec::parse(&["counter -> square".into()], &[]).expect("valid DAG");
    for (level, expected) in [(Level::Lww, 1), (Level::Dsc, 1), (Level::Dsrr, 4)] {
        let key = if level == Level::Dsc { "local-c" } else { "local-l" };
        let answer = client.run(spec.clone(), vec![Value::Text(key.into())], level).await;
        assert_eq!(answer.expect("answers"), Value::Int(expected), "at {level}");
    }
    let scheduler = cluster.scheduler.as_ref().expect("scheduler").handle().clone();
    let placements = scheduler
        .inspect(|s| s.requests().values().map(|r| r.placement.clone()).collect::<Vec<_>>())
        .await
        .expect("running");
    assert_eq!(placements.len(), 3);
    // Both functions of each call on one worker; the calls on one key on the same worker,
    // which told the scheduler its cache holds the key.
    assert!(placements.iter().all(|p| p.len() == 2 && p[0] == p[1]), "{placements:?}");
    assert_eq!(placements[2][0], placements[0][0], "{placements:?}");
    let cached = scheduler.inspect(|s| s.cached().clone()).await.expect("running");
    let holds = |worker, key| cached.get(&worker).is_some_and(|keys| keys.contains(key));
    assert!(holds(placements[0][0], "local-l"), "{cached:?}");
    assert!(holds(placements[1][0], "local-c"), "{cached:?}");
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

/// A module that reads key `k` (named in its memory), adds its argument, writes the sum back
/// and returns it; the others misbehave in one way each.
const RMW_WAT: &str = r#"(module
  (import "squall" "arg_int" (func $arg_int (param i32) (result i64)))
  (import "squall" "get_int" (func $get_int (param i32 i32) (result i64)))
  (import "squall" "put_int" (func $put_int (param i32 i32 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "wasm-k")
  (func (export "run") (result i64)
    (local $v i64)
    (local.set $v (i64.add (call $get_int (i32.const 0) (i32.const 6)) (call $arg_int (i32.const 0))))
    (call $put_int (i32.const 0) (i32.const 6) (local.get $v))
    (local.get $v)))
"#;
const LOOP_WAT: &str =
    r#"(module (func (export "run") (result i64) (loop $l (br $l)) (i64.const 0)))"#;
const GROW_WAT: &str = r#"(module (memory 1)
  (func (export "run") (result i64) (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0)))"#;
const TRAP_WAT: &str = r#"(module (func (export "run") (result i64) unreachable))"#;
const TEXT_WAT: &str = r#"(module
  (import "squall" "result_bytes" (func $result (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello")
  (func (export "run") (result i64) (call $result (i32.const 0) (i32.const 5)) (i64.const 0)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_webassembly_functions_run_under_limits() {
    let (_, cluster, client) = cluster("faas-wasm").await;
    let size = client.register_fn("inc_sq", squall_cluster::wasm::EXAMPLE_WAT.as_bytes()).await;
    assert!(size.expect("registered") > 8);
    let answer = client.call_fn("inc_sq", vec![Value::Int(3)], Level::Lww, &[]).await;
    assert_eq!(answer.expect("runs"), Value::Int(16));
    client.register_fn("wasm_rmw", RMW_WAT.as_bytes()).await.expect("registered");
    for level in [Level::Lww, Level::Dsrr] {
        let reads = ["wasm-k".to_owned()];
        let answer = client.call_fn("wasm_rmw", vec![Value::Int(5)], level, &reads).await;
        let expected = if level == Level::Lww { 5 } else { 10 };
        assert_eq!(answer.expect("runs"), Value::Int(expected), "at {level}");
    }
    client.register_fn("hello", TEXT_WAT.as_bytes()).await.expect("registered");
    let answer = client.call_fn("hello", vec![], Level::Lww, &[]).await;
    assert_eq!(answer.expect("runs"), Value::Text("hello".into()));
    // A native function in a DAG with an uploaded one.
    let spec = DagSpec::parse(&["increment -> inc_sq".into()], &[]).expect("valid");
    client.register_dag("mixed", &spec).await.expect("registered");
    let answer = client.call_dag("mixed", vec![Value::Int(1)], Level::Dsc).await;
    assert_eq!(answer.expect("runs"), Value::Int(9));

    // Bad modules are refused at registration, with the reason.
    let unknown_import = r#"(module (import "wasi" "fd_write" (func (param i32))) (func (export "run") (result i64) (i64.const 0)))"#;
    let refused = client.register_fn("bad", unknown_import.as_bytes()).await;
    assert!(
        matches!(&refused, Err(FaasError::Module(m)) if m.to_string().contains("wasi.fd_write")),
        "{refused:?}"
    );
    let refused = client.register_fn("bad", b"this is not wasm").await;
    assert!(matches!(refused, Err(FaasError::Module(_))), "{refused:?}");
    let refused = client.register_fn("bad", b"(module)").await;
    assert!(
        matches!(&refused, Err(FaasError::Module(m)) if m.to_string().contains("run")),
        "{refused:?}"
    );
    let refused = client.register_fn("square", TRAP_WAT.as_bytes()).await;
    assert!(matches!(refused, Err(FaasError::Builtin(_))), "{refused:?}");

    // Modules that loop forever, allocate without bound or trap fail their call; the workers go on.
    for (name, wat, expect) in
        [("spin", LOOP_WAT, "fuel"), ("hog", GROW_WAT, "trapped"), ("trap", TRAP_WAT, "trapped")]
    {
        client.register_fn(name, wat.as_bytes()).await.expect("registered");
        let failed = client.call_fn(name, vec![], Level::Lww, &[]).await;
        assert!(
            matches!(&failed, Err(FaasError::Failed { reason, .. }) if reason.contains(expect)),
            "{name}: {failed:?}"
        );
    }
    let answer = client.call_fn("inc_sq", vec![Value::Int(4)], Level::Lww, &[]).await;
    assert_eq!(answer.expect("still serving"), Value::Int(25));
    cluster.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_answers_at_once_and_leaves_its_result_under_a_key() {
    let (_, cluster, client) = cluster("faas-async").await;
    let spec = DagSpec::parse(&["nap -> increment".into()], &[]).expect("valid DAG");
    client.register_dag("later", &spec).await.expect("registered");
    let began = std::time::Instant::now();
    let key =
        client.submit_dag("later", vec![Value::Int(200)], Level::Lww).await.expect("accepted");
    assert!(began.elapsed() < Duration::from_millis(200), "submit waited for the call");
    assert!(key.starts_with("squall/result/"), "{key}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = client.kv().get(&key).await.expect("read") {
            assert_eq!(Value::from_stored(&Some(value)), Value::Int(201));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no result under {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A DAG may store its own result: store#KEY.
    let spec = DagSpec::parse(&["square -> store#sq-out".into()], &[]).expect("valid DAG");
    let answer = client.run(spec, vec![Value::Int(7)], Level::Dsrr).await;
    assert_eq!(answer.expect("runs"), Value::Int(49));
    let stored = client.kv().get("sq-out").await.expect("read");
    assert_eq!(Value::from_stored(&stored), Value::Int(49));
    cluster.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_of_a_dag_send_each_other_messages() {
    let (_, cluster, client) = cluster("faas-messages").await;
    // increment(5) = 6 goes along the edge to send#recv, which sends it to recv (a source,
    // already waiting): add(6, 6). Without the message recv would wait until the deadline.
    // Spread placement puts recv (function 0) and send#recv (function 3) on different workers.
    let spec = DagSpec::parse(&["recv -> add".into(), "increment -> send#recv -> add".into()], &[])
        .expect("valid DAG");
    for level in [Level::Lww, Level::Dsc] {
        let answer = client.run(spec.clone(), vec![Value::Int(5)], level).await;
        assert_eq!(answer.expect("runs"), Value::Int(12), "at {level}");
    }
    // A message to a label the DAG lacks fails the sender, and so the call.
    let spec = DagSpec::parse(&["send#nobody -> increment".into()], &[]).expect("valid DAG");
    let error = client.run(spec, vec![Value::Int(1)], Level::Lww).await.expect_err("fails");
    assert!(error.to_string().contains("nobody"), "{error}");
    cluster.stop().await.expect("stops");
}
