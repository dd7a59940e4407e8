//! What the binary's tests share: starting `agora` processes and waiting for them, and a
//! distributed deployment on a PostgreSQL schema and a JetStream stream of the test's own.

#![allow(dead_code)]

pub mod webdriver;

use std::process::Stdio;
use std::time::Duration;

use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const AGORA: &str = env!("CARGO_BIN_EXE_agora");

/// A program the tests need whose path scripts/test exports in `variable` (a PyPI tool in its
/// virtualenv): `None`, said plainly, when it is missing, which under `CI=true` is a failure.
pub fn tool(variable: &str, what: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var(variable).ok().map(std::path::PathBuf::from).filter(|p| p.exists());
    if path.is_none() {
        agora_eventstore::testing::unavailable(&format!("{what} ({variable}; scripts/test installs it)"), &"not found");
    }
    path
}

pub fn free_port() -> u16 {
    agora_eventstore::testing::free_port().expect("a free port")
}

pub async fn output(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(AGORA);
    command.args(args).env_remove("AGORA_DATABASE_URL").env_remove("AGORA_TARGETS");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().await.expect("agora runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `agora run …` and waits (with a deadline) for its ready line.
/// A running `agora run` and the log lines it has written so far.
pub struct Running {
    pub child: Child,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut command = Command::new(AGORA);
    // No AGORA_LOG_FORMAT: stderr is a pipe, not a terminal, so logs must come out as JSON.
    command
        .arg("run")
        .args(args)
        .env_remove("AGORA_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("agora starts");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let collected = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if let Ok(mut logs) = collected.lock() {
                logs.push(line);
            }
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Long enough for a service that waits for a JetStream cluster to elect its leader.
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("agora is ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "agora run did not report ready");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running { child, logs }
}

/// The first log line containing `text`, waiting for it with a deadline.
pub async fn testing_eventually_log(running: &Running, text: &str) -> String {
    agora_eventstore::testing::eventually(20, text, || async {
        running.logs.lock().ok().and_then(|logs| logs.iter().find(|l| l.contains(text)).cloned())
    })
    .await
}

pub async fn stop(running: Running) {
    let mut child = running.child;
    let pid = child.id().expect("running");
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops within 20 s")
        .expect("exit status");
    assert!(exit.success(), "a stop signal is a clean exit: {exit:?}");
}

pub async fn http_get(port: u16, path: &str) -> String {
    http(port, "GET", path).await
}

/// A plain HTTP/1.1 request without a body; the whole response, headers and all.
pub async fn http(port: u16, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("http connects");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    response
}

pub fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", token.parse().expect("header"));
    request
}

pub async fn public_titles(grpc: u16) -> Vec<String> {
    let mut client = HearingServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.expect("grpc connects");
    let list = client
        .list_hearings(pb::ListHearingsRequest { sort_by: "title".into(), ..Default::default() })
        .await
        .expect("list");
    list.into_inner().hearings.into_iter().map(|h| h.title).collect()
}

/// `agora run --target …` on a PostgreSQL schema and a JetStream stream of the test's own,
/// with tokens from a key the test holds.
pub struct Distributed {
    pub database: agora_eventstore::testing::TestDatabase,
    pub bus: agora_eventstore::testing::TestBus,
    pub dir: tempfile::TempDir,
    pub issuer: agora_auth::TokenIssuer,
    pub url: String,
    pub grpc: u16,
    pub http: u16,
    pub child: Running,
    /// The settings every process of this deployment shares.
    pub envs: Vec<(String, String)>,
    /// The identity service in a process of its own: its vault seals the personal data the
    /// hearing and response services keep, over gRPC.
    pub identity: Option<Running>,
}

pub const SERVICE_SECRET: &str = "a-service-secret-of-at-least-32-chars";
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

impl Distributed {
    pub async fn start(targets: &str) -> Option<Self> {
        Self::start_with(targets, &[]).await
    }

    /// With `extra` settings for the main process.
    pub async fn start_with(targets: &str, extra: &[(&str, &str)]) -> Option<Self> {
        Self::start_full(targets, extra, &[]).await
    }

    /// With `extra` settings for the main process and `identity_extra` for the identity
    /// service's own.
    pub async fn start_full(targets: &str, extra: &[(&str, &str)], identity_extra: &[(&str, &str)]) -> Option<Self> {
        let database = agora_eventstore::testing::postgres(2).await?;
        let bus = agora_eventstore::testing::nats().await?;
        let dir = tempfile::tempdir().expect("tmp");
        let key = agora_auth::SigningKey::generate_with_kid("k1").expect("key");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, agora_auth::jwks(&[&key]).to_string()).expect("jwks");
        let issuer = agora_auth::TokenIssuer::new(key, "agora-dev", "agora", chrono::Duration::hours(1));
        let url = format!("{}?options=-csearch_path%3D{}", agora_eventstore::testing::postgres_url(), database.schema);
        let (grpc, http) = (free_port(), free_port());
        let nats_url = agora_eventstore::testing::nats_url();
        // Files (documents, attachments) go to the test's own folder, shared by its processes.
        let data_dir = dir.path().join("data").to_str().expect("utf-8 path").to_string();
        let common = [
            ("AGORA_DATA_DIR", data_dir.as_str()),
            ("AGORA_DATABASE_URL", url.as_str()),
            ("AGORA_NATS_URL", nats_url.as_str()),
            ("AGORA_NATS_PREFIX", bus.bus.config.subject_prefix.as_str()),
            ("AGORA_PSEUDONYM_KEY", "0123456789abcdef0123456789abcdef"),
            ("AGORA_SERVICE_SECRET", SERVICE_SECRET),
        ];
        let identity = if !targets.split(',').any(|t| t == "identity") {
            let (identity_grpc, identity_http) = (free_port(), free_port());
            let mut envs = common.to_vec();
            let (grpc_addr, http_addr) = (format!("127.0.0.1:{identity_grpc}"), format!("127.0.0.1:{identity_http}"));
            envs.extend([
                ("AGORA_MASTER_KEY", MASTER_KEY),
                ("AGORA_GRPC_ADDR", &grpc_addr),
                ("AGORA_HTTP_ADDR", &http_addr),
            ]);
            envs.extend_from_slice(identity_extra);
            Some((start(&["--target", "identity"], &envs).await, identity_grpc))
        } else {
            None
        };
        let identity_url = identity.as_ref().map(|(_, port)| format!("http://127.0.0.1:{port}")).unwrap_or_default();
        let (grpc_addr, http_addr) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
        let mut shared = common.to_vec();
        shared.extend([("AGORA_TOKEN_JWKS", jwks.to_str().expect("path")), ("AGORA_IDENTITY_URL", &identity_url)]);
        let shared: Vec<(String, String)> = shared.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut envs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        envs.extend([("AGORA_GRPC_ADDR", grpc_addr.as_str()), ("AGORA_HTTP_ADDR", http_addr.as_str())]);
        envs.extend_from_slice(extra);
        let child = start(&["--target", targets], &envs).await;
        let identity = identity.map(|(running, _)| running);
        Some(Self { database, bus, dir, issuer, url, grpc, http, child, envs: shared, identity })
    }

    /// Another process of this deployment, on ports of its own (returned: gRPC, HTTP).
    pub async fn start_more(&self, targets: &str, extra: &[(&str, &str)]) -> (Running, u16, u16) {
        let (grpc, http) = (free_port(), free_port());
        let (grpc_addr, http_addr) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
        let mut envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        envs.extend([("AGORA_GRPC_ADDR", grpc_addr.as_str()), ("AGORA_HTTP_ADDR", http_addr.as_str())]);
        envs.extend_from_slice(extra);
        (start(&["--target", targets], &envs).await, grpc, http)
    }
}

/// The reference data a "plan" hearing needs: its type (with `rules` for responses), the
/// subject area "by" and the KLE number 01.02.05.
pub async fn define_plan_reference(grpc: u16, admin_token: &str, rules: Option<pb::ResponseRules>) {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}")).expect("uri").connect_lazy();
    let mut reference = pb::reference_data_service_client::ReferenceDataServiceClient::new(channel);
    let kind = pb::HearingType { id: "plan".into(), name: "Plan".into(), response_rules: rules, ..Default::default() };
    reference.define_hearing_type(authorized(admin_token, kind)).await.expect("type");
    let area = pb::NamedItem { id: "by".into(), name: "By".into(), retired: false };
    reference.define_subject_area(authorized(admin_token, area)).await.expect("area");
    let kle = pb::LoadKleRequest {
        entries: vec![pb::KleEntry { number: "01.02.05".into(), title: "Lokalplanlægning".into(), retired: false }],
        hierarchy_json: String::new(),
    };
    reference.load_kle(authorized(admin_token, kle)).await.expect("kle");
}

/// Everything a "plan" hearing needs to be published: texts, area, KLE, contact, dates.
pub fn complete_plan(
    hearing_id: &str,
    title: &str,
    esdh_title: &str,
    start: chrono::NaiveDate,
    deadline: chrono::NaiveDate,
) -> pb::UpdateHearingRequest {
    pb::UpdateHearingRequest {
        hearing_id: hearing_id.into(),
        fields: [
            ("title", title),
            ("summary", "Forslag til en ny bydel."),
            ("body", "Kommunen foreslår en ny bydel."),
            ("esdh_title", esdh_title),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        subject_area_id: Some("by".into()),
        kle_number: Some("01.02.05".into()),
        contact: Some(pb::ContactPerson {
            name: "Ejer".into(),
            email: "ejer@kommune.example".into(),
            phone: String::new(),
        }),
        start_date: Some(start.to_string()),
        deadline: Some(deadline.to_string()),
        ..Default::default()
    }
}

/// Stops the main process and starts it again on the same ports with `extra` settings.
pub async fn restart_main(d: &Distributed, extra: &[(&str, &str)]) -> Running {
    let pid = d.child.child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(status.success());
    agora_eventstore::testing::eventually(20, "the main process to stop", || async {
        std::net::TcpStream::connect(("127.0.0.1", d.grpc)).is_err().then_some(())
    })
    .await;
    let (grpc_addr, http_addr) = (format!("127.0.0.1:{}", d.grpc), format!("127.0.0.1:{}", d.http));
    let mut envs: Vec<(&str, &str)> = d.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    envs.extend([("AGORA_GRPC_ADDR", grpc_addr.as_str()), ("AGORA_HTTP_ADDR", http_addr.as_str())]);
    envs.extend_from_slice(extra);
    start(&["--target", "hearing,response"], &envs).await
}

/// Kills a process as a crash would (SIGKILL), and waits for it to be gone.
pub async fn kill_hard(running: Running) {
    let mut child = running.child;
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
}
