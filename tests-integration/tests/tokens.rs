//! Every service refuses a forged, expired, wrongly signed or wrongly addressed token with
//! UNAUTHENTICATED, and a valid token without the rights a call needs with PERMISSION_DENIED:
//! the hearing, response and identity services, over their real gRPC APIs.

use std::sync::Arc;

use agora_auth::{Principal, SigningKey, TokenIssuer};
use agora_proto::identity::v1 as ipb;
use agora_proto::identity::v1::identity_service_client::IdentityServiceClient;
use agora_proto::response::v1 as rpb;
use agora_proto::response::v1::response_service_client::ResponseServiceClient;
use agora_tests_integration::{Backend, Harness, People, pb};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use tonic::Code;
use tonic::transport::Channel;

/// The response and identity services beside the harness's hearing service, trusting the same
/// keys.
async fn other_services(h: &Harness) -> Channel {
    let verifier = Arc::new(h.issuer.verifier());
    agora_response::projections::migrate(&h.store).await.expect("response tables");
    agora_identity::store::migrate(&h.store).await.expect("identity tables");
    let master = agora_vault::MasterKey::generate("t").expect("master").0;
    let settings =
        agora_identity::app::IdentitySettings::new("agora-test", "agora", master, b"0123456789abcdef0123456789abcdef");
    let identity = agora_identity::app::IdentityApp::new(h.store.clone(), settings, Vec::new(), Arc::new(Utc::now))
        .await
        .expect("identity");
    let files = object_store::local::LocalFileSystem::new_with_prefix(h.files_dir.path()).expect("files");
    let (intake, _worker) = agora_response::intake::Intake::start(
        h.store.clone(),
        agora_response::files::Attachments { store: Arc::new(files), scanner: None },
        Arc::new(identity.vault.clone()),
        Arc::new(Utc::now),
        agora_response::intake::IntakeConfig::default(),
    );
    let response = agora_response::app::ResponseApp::new(h.store.clone(), intake, Arc::new(Utc::now));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = tonic::transport::Server::builder()
        .add_service(agora_response::grpc::service(response, verifier.clone()))
        .add_service(agora_identity::grpc::service(identity, verifier));
    tokio::spawn(async move {
        let _ = router.serve_with_incoming(agora_telemetry::grpc::incoming(listener)).await;
    });
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy()
}

fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// Tokens that must never be accepted, each with what is wrong with it.
fn bad_tokens(h: &Harness, who: &Principal) -> Vec<(&'static str, String)> {
    let good = h.issuer.issue(who).expect("token");
    let key = h.issuer.key().clone();
    let expired = TokenIssuer::new(key.clone(), "agora-test", "agora", Duration::minutes(15))
        .issue_at(who, Utc::now() - Duration::hours(2))
        .expect("token");
    let stranger = SigningKey::generate_with_kid("test").expect("key");
    let wrongly_signed =
        TokenIssuer::new(stranger, "agora-test", "agora", Duration::minutes(15)).issue(who).expect("token");
    let unknown_key =
        TokenIssuer::new(SigningKey::generate().expect("key"), "agora-test", "agora", Duration::minutes(15))
            .issue(who)
            .expect("token");
    let wrong_issuer = TokenIssuer::new(key.clone(), "https://evil.example", "agora", Duration::minutes(15))
        .issue(who)
        .expect("token");
    let wrong_audience =
        TokenIssuer::new(key, "agora-test", "another-system", Duration::minutes(15)).issue(who).expect("token");
    // The same token with administrator added to its claims after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["roles"] = serde_json::json!(["administrator"]);
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    vec![
        ("expired", expired),
        ("signed by another key under the same key id", wrongly_signed),
        ("signed by an unknown key", unknown_key),
        ("from another issuer", wrong_issuer),
        ("for another audience", wrong_audience),
        ("with claims changed after signing", forged),
        ("unsigned (alg none)", unsigned),
        ("not a token", "garbage".into()),
    ]
}

#[tokio::test]
async fn every_service_refuses_bad_tokens_and_calls_beyond_the_callers_rights() {
    let Some(mut h) = Harness::start(Backend::Sqlite).await else { return };
    let people = People::new();
    let channel = other_services(&h).await;
    let mut responses = ResponseServiceClient::new(channel.clone());
    let mut identity = IdentityServiceClient::new(channel);

    for (what, token) in bad_tokens(&h, &people.karen) {
        let hearing = h.hearings.owner_dashboard(with_token(&token, pb::OwnerDashboardRequest {})).await;
        let reference = h.reference.define_hearing_type(with_token(&token, pb::HearingType::default())).await;
        let response = responses.my_responses(with_token(&token, rpb::MyResponsesRequest {})).await;
        let access = responses
            .list_personal_data_access(with_token(
                &token,
                rpb::DataAccessRequest { subject_user_id: people.citizen.user_id.to_string() },
            ))
            .await;
        let me = identity.who_am_i(with_token(&token, ipb::WhoAmIRequest {})).await;
        let users = identity.list_users(with_token(&token, ipb::ListUsersRequest {})).await;
        for (service, code) in [
            ("hearing", hearing.err().map(|e| e.code())),
            ("reference data", reference.err().map(|e| e.code())),
            ("response", response.err().map(|e| e.code())),
            ("response access log", access.err().map(|e| e.code())),
            ("identity", me.err().map(|e| e.code())),
            ("identity users", users.err().map(|e| e.code())),
        ] {
            assert_eq!(code, Some(Code::Unauthenticated), "the {service} service and a token {what}");
        }
    }

    // A good token for a citizen: accepted, and refused where only staff or administrators may go.
    let citizen = h.issuer.issue(&people.citizen).expect("token");
    assert!(responses.my_responses(with_token(&citizen, rpb::MyResponsesRequest {})).await.is_ok());
    let denied = [
        h.reference.define_hearing_type(with_token(&citizen, pb::HearingType::default())).await.err().map(|e| e.code()),
        h.hearings
            .create_hearing(with_token(&citizen, pb::CreateHearingRequest { hearing_type_id: "lokalplan".into() }))
            .await
            .err()
            .map(|e| e.code()),
        responses
            .list_personal_data_access(with_token(
                &citizen,
                rpb::DataAccessRequest { subject_user_id: people.karen.user_id.to_string() },
            ))
            .await
            .err()
            .map(|e| e.code()),
        identity.list_users(with_token(&citizen, ipb::ListUsersRequest {})).await.err().map(|e| e.code()),
        identity
            .rotate_signing_key(with_token(&citizen, ipb::RotateSigningKeyRequest {}))
            .await
            .err()
            .map(|e| e.code()),
        identity
            .publish_terms(with_token(&citizen, ipb::PublishTermsRequest { version: "1".into(), text: "x".into() }))
            .await
            .err()
            .map(|e| e.code()),
        identity
            .erase_user(with_token(
                &citizen,
                ipb::EraseUserRequest { user_id: people.karen.user_id.to_string(), reason: String::new() },
            ))
            .await
            .err()
            .map(|e| e.code()),
    ];
    for (n, code) in denied.into_iter().enumerate() {
        assert_eq!(code, Some(Code::PermissionDenied), "call {n}");
    }
}
