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
