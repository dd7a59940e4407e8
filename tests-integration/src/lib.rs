//! Harness for end-to-end tests of the services over their real gRPC APIs, on SQLite and
//! on the machine's PostgreSQL and NATS JetStream. Each harness has its own store (schema
//! or file), files directory and clock, so tests run in parallel and leave nothing behind.

use std::sync::{Arc, Mutex};

use agora_auth::{Capacity, Principal, Role, SigningKey, TokenIssuer};
use agora_eventstore::Store;
use agora_eventstore::consumer::ProjectionRunner;
use agora_eventstore::testing::{self, TestDatabase};
use agora_hearing::app::HearingApp;
use agora_hearing::projections::{self, HearingListProjection};
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use agora_proto::hearing::v1::reference_data_service_client::ReferenceDataServiceClient;
use chrono::{DateTime, Utc};
use tonic::transport::Channel;
use uuid::Uuid;

pub use agora_proto::hearing::v1 as pb;

pub enum Backend {
    Sqlite,
    Postgres,
}

/// One running hearing service with its clients.
pub struct Harness {
    pub store: Store,
    pub app: HearingApp,
    pub runner: ProjectionRunner,
    pub hearings: HearingServiceClient<Channel>,
    pub reference: ReferenceDataServiceClient<Channel>,
    pub issuer: TokenIssuer,
    pub files_dir: tempfile::TempDir,
    pub now: Arc<Mutex<DateTime<Utc>>>,
    pub database: Option<TestDatabase>,
    _sqlite_dir: Option<tempfile::TempDir>,
    _server: tokio::task::JoinHandle<()>,
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|e| panic!("bad time {s}: {e}"))
}

/// Demo-like people for the tests.
pub struct People {
    pub admin: Principal,
    pub karen: Principal,
    pub lars: Principal,
    pub erik: Principal,
    pub citizen: Principal,
    pub company: Principal,
}

impl People {
    pub fn new() -> Self {
        let employee = |name: &str| Principal::new(Uuid::now_v7(), Capacity::Employee).with_name(name);
        Self {
            admin: employee("Admin").with_role(Role::Administrator),
            karen: employee("Karen").with_role(Role::HearingCreator),
            lars: employee("Lars").with_role(Role::HearingCreator),
            erik: employee("Erik"),
            citizen: Principal::new(Uuid::now_v7(), Capacity::Citizen).with_name("Birgitte"),
            company: Principal::new(Uuid::now_v7(), Capacity::Company).with_company("company-ref-1"),
        }
    }
}

fn hearing_app(
    store: Store,
    files: object_store::local::LocalFileSystem,
    now: Arc<Mutex<DateTime<Utc>>>,
) -> HearingApp {
    let clock: agora_hearing::app::Clock = Arc::new(move || now.lock().map(|t| *t).unwrap_or_else(|_| Utc::now()));
    HearingApp::new(store, Arc::new(files), b"test-pseudonym-key", agora_vault::MemoryKeys::shared(), clock)
}

impl Default for People {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// `None` when the backend is not reachable here (the test then says it skipped).
    pub async fn start(backend: Backend) -> Option<Self> {
        let (store, database, sqlite_dir) = match backend {
            Backend::Sqlite => {
                let (store, dir) = testing::sqlite().await;
                (store, None, Some(dir))
            }
            Backend::Postgres => {
                let database = testing::postgres(8).await?;
                (database.store.clone(), Some(database), None)
            }
        };
        Some(Self::on_store(store, database, sqlite_dir).await)
    }

    async fn on_store(store: Store, database: Option<TestDatabase>, sqlite_dir: Option<tempfile::TempDir>) -> Self {
        projections::migrate(&store).await.unwrap_or_else(|e| panic!("read-model schema: {e}"));
        let files_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let files = object_store::local::LocalFileSystem::new_with_prefix(files_dir.path())
            .unwrap_or_else(|e| panic!("files: {e}"));
        let now = Arc::new(Mutex::new(at("2026-11-22T10:00:00Z")));
        let app = hearing_app(store.clone(), files, now.clone());
        let key = SigningKey::generate_with_kid("test").unwrap_or_else(|e| panic!("key: {e}"));
        let issuer = TokenIssuer::new(key, "agora-test", "agora", chrono::Duration::hours(1));
        let verifier = Arc::new(issuer.verifier());
        let (hearing_service, reference_service) = agora_hearing::grpc::services(app.clone(), verifier);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .trace_fn(agora_telemetry::grpc::server_span)
                .add_service(hearing_service)
                .add_service(reference_service)
                .serve_with_incoming(agora_telemetry::grpc::incoming(listener))
                .await;
        });
        let channel =
            Channel::from_shared(format!("http://{addr}")).unwrap_or_else(|e| panic!("uri: {e}")).connect_lazy();
        let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(HearingListProjection)]);
        Self {
            store,
            app,
            runner,
            hearings: HearingServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            reference: ReferenceDataServiceClient::new(channel),
            issuer,
            files_dir,
            now,
            database,
            _sqlite_dir: sqlite_dir,
            _server: server,
        }
    }

    /// Another instance of the hearing service's application, on `store` (one waiting for
    /// the read models, say), with the harness's files and clock.
    pub fn app_on(&self, store: Store) -> HearingApp {
        let files = object_store::local::LocalFileSystem::new_with_prefix(self.files_dir.path())
            .unwrap_or_else(|e| panic!("files: {e}"));
        hearing_app(store, files, self.now.clone())
    }

    pub fn set_now(&self, time: &str) {
        if let Ok(mut now) = self.now.lock() {
            *now = at(time);
        }
    }

    /// A request carrying `who`'s token (or none: the anonymous public).
    pub fn as_user<T>(&self, who: Option<&Principal>, message: T) -> tonic::Request<T> {
        let request = tonic::Request::new(message);
        match who {
            Some(p) => {
                let token = self.issuer.issue(p).unwrap_or_else(|e| panic!("token: {e}"));
                agora_auth::grpc::bearer(request, &token).unwrap_or_else(|e| panic!("bearer: {e}"))
            }
            None => request,
        }
    }

    /// Applies everything committed so far to the read models.
    pub async fn settle(&self) {
        self.runner.catch_up().await.unwrap_or_else(|e| panic!("projections: {e}"));
    }

    /// Reference data as an administrator defines it: three hearing types (`kort` takes
    /// short responses, files alone, at most three PDFs of 4 KiB), areas, KLE.
    pub async fn define_reference_data(&mut self, admin: &Principal) {
        let external =
            pb::HearingType { id: "lokalplan".into(), name: "Lokalplan".into(), internal: false, ..Default::default() };
        let internal =
            pb::HearingType {
                id: "intern".into(), name: "Intern høring".into(), internal: true, ..Default::default()
            };
        let short = pb::HearingType {
            id: "kort".into(),
            name: "Kort høring".into(),
            response_rules: Some(pb::ResponseRules {
                text_optional: true,
                max_text_chars: 500,
                max_files: 3,
                max_file_bytes: 4096,
                allowed_types: vec!["application/pdf".into()],
            }),
            ..Default::default()
        };
        for t in [external, internal, short] {
            let request = self.as_user(Some(admin), t);
            self.reference.define_hearing_type(request).await.unwrap_or_else(|e| panic!("hearing type: {e}"));
        }
        for (id, name) in [("plan", "Byplan"), ("miljo", "Miljø")] {
            let request = self.as_user(Some(admin), pb::NamedItem { id: id.into(), name: name.into(), retired: false });
            self.reference.define_subject_area(request).await.unwrap_or_else(|e| panic!("subject area: {e}"));
            let request =
                self.as_user(Some(admin), pb::NamedItem { id: format!("{id}-by"), name: name.into(), retired: false });
            self.reference.define_city_area(request).await.unwrap_or_else(|e| panic!("city area: {e}"));
        }
        let request = self.as_user(
            Some(admin),
            pb::LoadKleRequest {
                entries: Vec::new(),
                hierarchy_json: include_str!("../../services/hearing/testdata/kle.json").into(),
            },
        );
        self.reference.load_kle(request).await.unwrap_or_else(|e| panic!("kle: {e}"));
        self.settle().await;
    }

    /// Creates a hearing and fills everything a draft needs.
    pub async fn draft(
        &mut self,
        owner: &Principal,
        hearing_type: &str,
        title: &str,
        start: &str,
        deadline: &str,
    ) -> String {
        let request = self.as_user(Some(owner), pb::CreateHearingRequest { hearing_type_id: hearing_type.into() });
        let hearing =
            self.hearings.create_hearing(request).await.unwrap_or_else(|e| panic!("create: {e}")).into_inner();
        let request = self.as_user(Some(owner), complete_update(&hearing.hearing_id, title, start, deadline));
        let hearing =
            self.hearings.update_hearing(request).await.unwrap_or_else(|e| panic!("update: {e}")).into_inner();
        assert_eq!(hearing.status, pb::HearingStatus::Draft as i32, "complete metadata makes a draft");
        hearing.hearing_id
    }
}

pub fn complete_update(id: &str, title: &str, start: &str, deadline: &str) -> pb::UpdateHearingRequest {
    pb::UpdateHearingRequest {
        hearing_id: id.to_string(),
        fields: [
            ("title", title.to_string()),
            ("summary", format!("Resumé af {title}, kort fortalt.")),
            ("body", format!("Høringstekst om {title}: kommunen foreslår ændringer.")),
            ("esdh_title", format!("Høring {title}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        subject_area_id: Some("plan".into()),
        city_area_id: Some("plan-by".into()),
        kle_number: Some("01.02.05".into()),
        contact: Some(pb::ContactPerson {
            name: "Karen".into(),
            email: "karen@kommune.example".into(),
            phone: String::new(),
        }),
        start_date: Some(start.into()),
        deadline: Some(deadline.into()),
        closed: None,
        notify_participants: false,
    }
}

/// Runs a test body against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(harness) = $crate::Harness::start($crate::Backend::Sqlite).await {
                    $body(harness).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(harness) = $crate::Harness::start($crate::Backend::Postgres).await {
                    $body(harness).await;
                }
            }
        }
    };
}
