//! OpenID Connect logins against a real provider process (oidc-provider-mock, with PKCE
//! enforced): a citizen logs in through the whole authorization-code flow, and ID tokens from
//! a wrong issuer, for a wrong audience, expired, with a wrong nonce, a wrong PKCE verifier
//! and a replayed state are each refused.

mod support;

use std::collections::HashMap;

use agora_auth::Capacity;
use agora_identity::app::IdentityAppError;
use agora_identity::oidc::{OidcError, OidcProvider};
use agora_identity::providers::{ClaimMapping, ProviderConfig};
use chrono::Duration;
use openidconnect::IssuerUrl;
use support::{Backend, Provider, TestClock, env, provider};

const REDIRECT: &str = "http://127.0.0.1:9/login/callback";
const CPR_CLAIM: &str = "https://data.gov.dk/model/core/eid/cprNumber";
const NAME_CLAIM: &str = "https://data.gov.dk/model/core/eid/fullName";

fn config(issuer: &str, client_id: &str) -> ProviderConfig {
    ProviderConfig {
        id: "mitid".into(),
        display_name: "MitID".into(),
        capacity: Capacity::Citizen,
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret: Some("s3cret".into()),
        client_secret_env: None,
        redirect_uri: REDIRECT.into(),
        scopes: vec!["profile".into(), "email".into()],
        claims: ClaimMapping { preset: "nemlogin".into(), email: Some("email".into()), ..Default::default() },
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Gives the person's claims to the provider, as the broker would know them.
async fn person(provider: &Provider, sub: &str, claims: serde_json::Value) {
    let url = format!("{}/users/{sub}", provider.issuer);
    let answer = http().put(url).json(&claims).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 204, "{}", answer.text().await.unwrap_or_default());
}

/// What the person's browser does at the provider: picks the person and follows the redirect
/// back. Returns the query of the callback (code and state).
async fn browser(authorization_url: &str, sub: &str) -> HashMap<String, String> {
    let answer = http().post(authorization_url).form(&[("sub", sub)]).send().await.unwrap();
    let status = answer.status();
    let location = answer.headers().get("location").and_then(|l| l.to_str().ok()).map(String::from);
    let Some(location) = location else {
        panic!("the provider did not redirect back ({status}): {}", answer.text().await.unwrap_or_default());
    };
    assert!(location.starts_with(REDIRECT), "redirected to {location}");
    url::Url::parse(&location).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn discovered(provider: &Provider, client_id: &str, clock: &TestClock) -> OidcProvider {
    OidcProvider::discover(config(&provider.issuer, client_id), clock.as_fn()).await.unwrap()
}

#[tokio::test]
async fn a_citizen_logs_in_with_pkce_and_a_replayed_state_is_refused() {
    let Some(provider) = provider().await else { return };
    let clock = TestClock::new();
    let oidc = discovered(&provider, "agora", &clock).await;
    let Some(env) = env(Backend::Sqlite, false, vec![oidc], clock).await else { return };
    person(
        &provider,
        "borger-1",
        serde_json::json!({NAME_CLAIM: "Birgitte Borger", CPR_CLAIM: "010180-1234", "email": "birgitte@example.dk"}),
    )
    .await;

    let begun = env.app.begin_login("mitid").await.unwrap();
    assert!(begun.authorization_url.contains("code_challenge_method=S256"), "{}", begun.authorization_url);
    assert!(begun.authorization_url.contains("nonce="));
    let callback = browser(&begun.authorization_url, "borger-1").await;
    assert_eq!(callback["state"], begun.state);
    let session = env.app.complete_login(&callback["state"], &callback["code"]).await.unwrap();
    assert_eq!(session.user.name, "Birgitte Borger");
    assert_eq!(session.user.capacity, Some(Capacity::Citizen));
    let principal = env.app.verifier().verify(&session.access_token).unwrap();
    assert_eq!(principal.user_id, session.user.user_id);
    // Her token carries her CPR number's pseudonym, so invitations made before now find her.
    let reference = agora_vault::KeyedHash::new(support::PSEUDONYM_KEY).person_reference("0101801234");
    assert!(principal.references.contains(&format!("person:{reference}")), "{:?}", principal.references);
    // The provider did not say it verified her address: invitations to it do not find her.
    assert!(!principal.references.iter().any(|r| r.starts_with("email:")), "{:?}", principal.references);

    // The CPR number is nowhere in the log: only its keyed pseudonym.
    let log = env.store.read_log(agora_eventstore::LogPosition::START, 1000).await.unwrap();
    let text: String = log.iter().map(|e| e.payload.get().to_string()).collect();
    assert!(!text.contains("0101801234") && !text.contains("010180-1234") && !text.contains("Birgitte"));
    let reference = agora_vault::KeyedHash::new(support::PSEUDONYM_KEY).person_reference("0101801234");
    assert!(text.contains(&format!("person:{reference}")), "invitations by CPR can find her: {text}");

    // Her CPR number is kept sealed for her, for Digital Post: the notification service asks.
    let contact = env.app.contact(session.user.user_id).await.unwrap().expect("her contact");
    assert_eq!(contact.digital_post.as_deref(), Some("CPR:0101801234"));
    assert_eq!((contact.email.as_deref(), contact.language.as_str()), (Some("birgitte@example.dk"), "da"));

    // The same answer again (a replayed state) is refused.
    let err = env.app.complete_login(&callback["state"], &callback["code"]).await.unwrap_err();
    assert!(matches!(err, IdentityAppError::Unauthenticated(ref m) if m.contains("already used")), "{err}");

    // A second login of the same person is the same user.
    let again = env.app.begin_login("mitid").await.unwrap();
    let callback = browser(&again.authorization_url, "borger-1").await;
    let second = env.app.complete_login(&callback["state"], &callback["code"]).await.unwrap();
    assert_eq!(second.user.user_id, session.user.user_id);
    assert!(matches!(env.app.begin_login("nemid").await, Err(IdentityAppError::Invalid(_))));
}

#[tokio::test]
async fn id_tokens_of_a_wrong_issuer_audience_time_nonce_or_verifier_are_refused() {
    let Some(provider) = provider().await else { return };
    let clock = TestClock::new();
    person(&provider, "borger-2", serde_json::json!({NAME_CLAIM: "Carl", CPR_CLAIM: "0202802345"})).await;

    // A wrong issuer: the ID token's iss is not the configured one.
    let (metadata, http_client) = OidcProvider::read_metadata(&provider.issuer).await.unwrap();
    let mut config_wrong_issuer = config(&provider.issuer, "agora");
    config_wrong_issuer.issuer = "https://login.example.invalid".into();
    let impostor = metadata.clone().set_issuer(IssuerUrl::new("https://login.example.invalid".into()).unwrap());
    let wrong_issuer =
        OidcProvider::from_metadata(config_wrong_issuer, impostor, http_client.clone(), clock.as_fn()).unwrap();
    let begun = wrong_issuer.authorize();
    let callback = browser(&begun.authorization_url, "borger-2").await;
    let err = wrong_issuer.complete(&callback["code"], &begun.nonce, &begun.pkce_verifier).await.unwrap_err();
    assert!(matches!(err, OidcError::BadIdToken { ref reason, .. } if reason.contains("issuer")), "{err}");

    // A wrong audience: a real token the provider issued to another client.
    let ours = discovered(&provider, "agora", &clock).await;
    let theirs = discovered(&provider, "another-client", &clock).await;
    let begun = theirs.authorize();
    let callback = browser(&begun.authorization_url, "borger-2").await;
    let token: serde_json::Value = http()
        .post(format!("{}/oauth2/token", provider.issuer))
        .basic_auth("another-client", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &callback["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &begun.pkce_verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = token["id_token"].as_str().unwrap_or_else(|| panic!("no ID token: {token}"));
    assert!(theirs.verify_id_token(id_token, &begun.nonce).is_ok(), "the token is good for its own client");
    let err = ours.verify_id_token(id_token, &begun.nonce).unwrap_err();
    assert!(matches!(err, OidcError::BadIdToken { ref reason, .. } if reason.contains("audience")), "{err}");
    // A wrong nonce: the token was not made for this login.
    let err = theirs.verify_id_token(id_token, "another-nonce").unwrap_err();
    assert!(matches!(err, OidcError::BadIdToken { ref reason, .. } if reason.contains("nonce")), "{err}");

    // An expired token: checked two hours later.
    let late = TestClock::new();
    late.advance(Duration::hours(2));
    let expired = OidcProvider::from_metadata(
        config(&provider.issuer, "agora"),
        metadata.clone(),
        http_client.clone(),
        late.as_fn(),
    )
    .unwrap();
    let begun = expired.authorize();
    let callback = browser(&begun.authorization_url, "borger-2").await;
    let err = expired.complete(&callback["code"], &begun.nonce, &begun.pkce_verifier).await.unwrap_err();
    assert!(
        matches!(err, OidcError::BadIdToken { ref reason, .. } if reason.to_lowercase().contains("expired")),
        "{err}"
    );

    // A wrong PKCE verifier: the provider refuses the code.
    let begun = ours.authorize();
    let callback = browser(&begun.authorization_url, "borger-2").await;
    let forged = "x".repeat(64);
    let err = ours.complete(&callback["code"], &begun.nonce, &forged).await.unwrap_err();
    assert!(matches!(err, OidcError::CodeRefused { .. }), "{err}");

    // A forged signature: the payload changed after signing.
    let mut parts: Vec<String> = id_token.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert!(theirs.verify_id_token(&parts.join("."), &begun.nonce).is_err());
}
