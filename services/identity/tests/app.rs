//! The identity service's application on SQLite and on the real PostgreSQL: the development
//! login, sessions, roles, terms, key rotation and erasure by crypto-shredding.

mod support;

use agora_auth::{AuthError, Capacity, Role};
use agora_identity::app::IdentityAppError;
use agora_identity::domain::{IdentityError, USER_AGGREGATE};
use agora_vault::{KeyOwner, PersonKeys, Revealed};
use chrono::Duration;
use support::{Backend, TestClock, env};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Postgres).await;
            })*
        }
    };
}

on_both_backends!(
    development_login_is_off_unless_enabled,
    sessions_rotate_refresh_tokens_and_a_reused_one_ends_the_session,
    administrators_assign_roles_that_reach_the_next_token,
    terms_are_versioned_and_consent_is_recorded_per_version,
    signing_keys_rotate_without_a_valid_token_failing,
    erasure_destroys_the_key_and_the_log_still_verifies,
    the_contact_directory_answers_for_many_people_at_once,
    a_role_assigned_is_in_the_user_list_read_right_after,
);

async fn development_login_is_off_unless_enabled(backend: Backend) {
    let Some(off) = env(backend, false, vec![], TestClock::new()).await else { return };
    match off.app.dev_login("karen").await {
        Err(IdentityAppError::PermissionDenied(message)) => assert!(message.contains("development login is off")),
        other => panic!("the development login worked while off: {other:?}"),
    }
    let Some(on) = env(Backend::Sqlite, true, vec![], TestClock::new()).await else { return };
    let session = on.app.dev_login("karen").await.unwrap();
    assert_eq!(session.user.name, "Karen Sagsbehandler");
    assert_eq!(session.user.user_id.to_string(), "00000000-0000-7000-8000-000000000002");
    let principal = on.app.verifier().verify(&session.access_token).unwrap();
    assert!(principal.can_create_hearings());
    assert_eq!(principal.name.as_deref(), Some("Karen Sagsbehandler"));
    let err = on.app.dev_login("mallory").await.unwrap_err();
    assert!(err.to_string().contains("no demo user \"mallory\""), "{err}");

    // The company user's company is the pseudonym of its CVR number, never the number.
    let dorte = on.app.dev_login("dorte").await.unwrap();
    let company = dorte.user.company.clone().unwrap();
    assert_eq!(company, agora_vault::KeyedHash::new(support::PSEUDONYM_KEY).company_reference("12345678"));
    assert!(!on.app.verifier().verify(&dorte.access_token).unwrap().company.unwrap().contains("12345678"));
    // The company is registered by its first user's login, and listed for administrators.
    on.app.dev_login("dorte").await.unwrap();
    on.runner.catch_up().await.unwrap();
    let admin = on.app.verifier().verify(&on.app.dev_login("admin").await.unwrap().access_token).unwrap();
    let companies = on.app.list_companies(&admin).await.unwrap();
    assert_eq!(companies.len(), 1);
    assert_eq!(
        (companies[0].reference.as_str(), companies[0].name.as_deref()),
        (company.as_str(), Some("Demo Virksomhed ApS"))
    );
    assert_eq!(companies[0].users, vec![dorte.user.user_id], "joined once");
    let karen = on.app.verifier().verify(&session.access_token).unwrap();
    assert!(matches!(on.app.list_companies(&karen).await, Err(IdentityAppError::PermissionDenied(_))));
}

async fn sessions_rotate_refresh_tokens_and_a_reused_one_ends_the_session(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let first = env.app.dev_login("birgitte").await.unwrap();
    let second = env.app.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.user.user_id, first.user.user_id);
    let third = env.app.refresh(&second.refresh_token).await.unwrap();

    // The first token again: someone kept a copy. The whole session ends, the newest token too.
    let err = env.app.refresh(&first.refresh_token).await.unwrap_err();
    assert!(matches!(err, IdentityAppError::Unauthenticated(ref m) if m.contains("already used")), "{err}");
    assert!(matches!(env.app.refresh(&third.refresh_token).await, Err(IdentityAppError::Unauthenticated(_))));

    // Logout ends a session; expiry ends one too.
    let other = env.app.dev_login("carl").await.unwrap();
    env.app.logout(&other.refresh_token).await.unwrap();
    assert!(matches!(env.app.refresh(&other.refresh_token).await, Err(IdentityAppError::Unauthenticated(_))));
    let late = env.app.dev_login("carl").await.unwrap();
    env.clock.advance(Duration::days(2));
    let err = env.app.refresh(&late.refresh_token).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(matches!(env.app.refresh("agr1_forged").await, Err(IdentityAppError::Unauthenticated(_))));
}

async fn administrators_assign_roles_that_reach_the_next_token(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin = env.app.dev_login("admin").await.unwrap();
    let admin = env.app.verifier().verify(&admin.access_token).unwrap();
    let erik = env.app.dev_login("erik").await.unwrap();
    let erik_principal = env.app.verifier().verify(&erik.access_token).unwrap();
    assert!(!erik_principal.can_create_hearings());

    let err = env.app.assign_role(&erik_principal, erik.user.user_id, Role::HearingCreator).await.unwrap_err();
    assert!(matches!(err, IdentityAppError::Domain(IdentityError::NotAllowed(_))), "{err}");
    let view = env.app.assign_role(&admin, erik.user.user_id, Role::HearingCreator).await.unwrap();
    assert_eq!(view.roles, vec![Role::HearingCreator]);
    let refreshed = env.app.refresh(&erik.refresh_token).await.unwrap();
    assert!(env.app.verifier().verify(&refreshed.access_token).unwrap().can_create_hearings());

    let citizen = env.app.dev_login("carl").await.unwrap();
    let err = env.app.assign_role(&admin, citizen.user.user_id, Role::HearingCreator).await.unwrap_err();
    assert!(err.to_string().contains("for employees"), "{err}");

    env.app.revoke_role(&admin, erik.user.user_id, Role::HearingCreator).await.unwrap();
    let again = env.app.refresh(&refreshed.refresh_token).await.unwrap();
    assert!(!env.app.verifier().verify(&again.access_token).unwrap().can_create_hearings());

    // The administrators' list, from the read model.
    env.runner.catch_up().await.unwrap();
    let users = env.app.list_users(&admin).await.unwrap();
    assert!(users.iter().any(|u| u.name == "Erik Medarbejder" && u.roles.is_empty()), "{users:?}");
    assert_eq!(users.len(), 3);
    assert!(matches!(env.app.list_users(&erik_principal).await, Err(IdentityAppError::PermissionDenied(_))));
}

async fn terms_are_versioned_and_consent_is_recorded_per_version(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin = env.app.verifier().verify(&env.app.dev_login("admin").await.unwrap().access_token).unwrap();
    let citizen_session = env.app.dev_login("birgitte").await.unwrap();
    let citizen = env.app.verifier().verify(&citizen_session.access_token).unwrap();
    assert!(!citizen_session.user.must_accept_terms, "no terms published yet");

    assert!(matches!(env.app.publish_terms(&citizen, "1", "Vilkår").await, Err(IdentityAppError::PermissionDenied(_))));
    env.app.publish_terms(&admin, "1", "Vilkår for brug af høringsportalen").await.unwrap();
    assert!(env.app.who_am_i(&citizen).await.unwrap().must_accept_terms);
    let view = env.app.accept_terms(&citizen, "1").await.unwrap();
    assert_eq!(view.terms_accepted.as_deref(), Some("1"));
    assert!(!view.must_accept_terms);

    env.app.publish_terms(&admin, "2", "Nye vilkår").await.unwrap();
    let err = env.app.publish_terms(&admin, "2", "Andre vilkår").await.unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
    assert!(env.app.who_am_i(&citizen).await.unwrap().must_accept_terms);
    let err = env.app.accept_terms(&citizen, "1").await.unwrap_err();
    assert!(err.to_string().contains("not the one in force"), "{err}");
    assert_eq!(env.app.current_terms().await.unwrap().unwrap().version, "2");
    // Each consent is an event of its own.
    env.app.accept_terms(&citizen, "2").await.unwrap();
    let events = env.store.read_stream(USER_AGGREGATE, &citizen.user_id.to_string(), 0).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.event_type == "TermsAccepted").count(), 2);
}

async fn signing_keys_rotate_without_a_valid_token_failing(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin_session = env.app.dev_login("admin").await.unwrap();
    let verifier = env.app.verifier();
    let admin = verifier.verify(&admin_session.access_token).unwrap();
    let (before, old_kid) = env.app.jwks().await.unwrap();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);

    let karen = verifier.verify(&env.app.dev_login("karen").await.unwrap().access_token).unwrap();
    assert!(matches!(env.app.rotate_signing_key(&karen).await, Err(IdentityAppError::PermissionDenied(_))));
    let (after, signing) = env.app.rotate_signing_key(&admin).await.unwrap();
    assert_eq!(after["keys"].as_array().unwrap().len(), 2, "both keys are published");
    assert_eq!(signing, old_kid, "the new key does not sign before services have fetched it");
    let new_kid = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .find(|k| *k != old_kid)
        .unwrap();

    // Once published long enough the new key signs; tokens of the old key still verify.
    env.clock.advance(Duration::minutes(11));
    let fresh = env.app.dev_login("erik").await.unwrap();
    assert_eq!(env.app.jwks().await.unwrap().1, new_kid);
    let fresh_kid = verifier.verify_token_at(&fresh.access_token, env.clock.now()).unwrap().kid;
    assert_eq!(fresh_kid, new_kid);
    assert!(verifier.verify_at(&admin_session.access_token, env.clock.now() - Duration::minutes(5)).is_ok());

    // After the old key's tokens have all expired, it is no longer published.
    env.clock.advance(Duration::minutes(20));
    env.app.refresh_verifier().await.unwrap();
    assert_eq!(env.app.jwks().await.unwrap().0["keys"].as_array().unwrap().len(), 1);
    let err = verifier
        .verify_at(&admin_session.access_token, admin_session.access_expires_at - Duration::minutes(1))
        .unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId(_)), "{err}");
}

async fn erasure_destroys_the_key_and_the_log_still_verifies(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin = env.app.verifier().verify(&env.app.dev_login("admin").await.unwrap().access_token).unwrap();
    let carl = env.app.dev_login("carl").await.unwrap();
    let carl_principal = env.app.verifier().verify(&carl.access_token).unwrap();
    let birgitte = env.app.dev_login("birgitte").await.unwrap();
    let birgitte_id = birgitte.user.user_id;

    // What a response service would seal for her, before the erasure.
    let in_hearing = KeyOwner::in_hearing(birgitte_id, uuid::Uuid::now_v7());
    // An invitation by her e-mail address, made before she logged in.
    let address = agora_vault::KeyedHash::new(support::PSEUDONYM_KEY).email_reference("birgitte@demo.agora.invalid");
    let invited = KeyOwner::for_reference(&format!("email:{address}"), uuid::Uuid::now_v7()).unwrap();
    let invitation = env.app.vault.seal(&invited, "Birgitte Borger <birgitte@demo.agora.invalid>").await.unwrap();
    let sealed = env.app.vault.seal(&in_hearing, "Birgitte Borger skriver: flere træer").await.unwrap();
    assert!(matches!(env.app.vault.reveal(&sealed).await.unwrap(), Revealed::Clear(_)));

    let err = env.app.erase(&carl_principal, birgitte_id, "no").await.unwrap_err();
    assert!(matches!(err, IdentityAppError::Domain(IdentityError::NotAllowed(_))), "{err}");
    assert!(
        matches!(env.app.vault.reveal(&sealed).await.unwrap(), Revealed::Clear(_)),
        "a refused erasure destroyed nothing"
    );

    env.app.erase(&admin, birgitte_id, "the person asked (GDPR art. 17)").await.unwrap();
    assert_eq!(env.app.vault.reveal(&sealed).await.unwrap(), Revealed::Erased);
    assert_eq!(env.app.vault.reveal(&invitation).await.unwrap(), Revealed::Erased, "and what invitations held");
    assert!(env.app.vault.seal(&invited, "a new invitation").await.is_ok(), "the address may be invited again");
    assert!(env.app.vault.seal(&in_hearing, "more").await.is_err(), "nothing new is sealed for an erased person");
    let elsewhere = KeyOwner::in_hearing(birgitte_id, uuid::Uuid::now_v7());
    assert!(env.app.vault.seal(&elsewhere, "more").await.is_err(), "in no hearing either");
    assert!(matches!(env.app.refresh(&birgitte.refresh_token).await, Err(IdentityAppError::Unauthenticated(_))));

    // Her events are where they were, their sealed name unreadable, and the chain intact.
    let events = env.store.read_stream(USER_AGGREGATE, &birgitte_id.to_string(), 0).await.unwrap();
    let payloads: String = events.iter().map(|e| e.payload.get().to_string()).collect();
    assert!(!payloads.contains("Birgitte"), "a name in clear in the log: {payloads}");
    assert!(payloads.contains("pii1."));
    assert!(events.iter().any(|e| e.event_type == "UserErased"));
    let report = agora_eventstore::audit::verify(&env.store).await.unwrap();
    assert!(report.intact(), "{:?}", report.findings);

    // A rebuilt read model does not bring her back.
    let projection = env.runner.projections()[0].clone();
    env.runner.rebuild(projection.as_ref(), |_, _| {}).await.unwrap();
    let users = env.app.list_users(&admin).await.unwrap();
    let erased = users.iter().find(|u| u.user_id == birgitte_id).unwrap();
    assert!(erased.erased && erased.name.is_empty() && erased.roles.is_empty());
    assert!(users.iter().all(|u| !u.name.contains("Birgitte")));
    // Carl is untouched; the demo account cannot come back under its old id.
    assert_eq!(users.iter().find(|u| u.user_id == carl.user.user_id).unwrap().name, "Carl Citizen");
    assert!(matches!(env.app.dev_login("birgitte").await, Err(IdentityAppError::Domain(IdentityError::Erased))));
    // People may erase themselves.
    env.app.erase(&carl_principal, carl.user.user_id, "").await.unwrap();
    assert_eq!(Capacity::Citizen, env.app.who_am_i(&carl_principal).await.unwrap().capacity.unwrap());
}

/// How the notification service finds a batch of messages' recipients: one call for all.
async fn the_contact_directory_answers_for_many_people_at_once(backend: Backend) {
    use agora_identity::keyservice::ContactGrpc;
    use agora_proto::identity::v1::GetContactsRequest;
    use agora_proto::identity::v1::contact_directory_server::ContactDirectory;

    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin = env.app.verifier().verify(&env.app.dev_login("admin").await.unwrap().access_token).unwrap();
    let carl = env.app.dev_login("carl").await.unwrap().user.user_id.to_string();
    let birgitte = env.app.dev_login("birgitte").await.unwrap().user.user_id;
    env.app.erase(&admin, birgitte, "the person asked (GDPR art. 17)").await.unwrap();
    let birgitte = birgitte.to_string();
    let nobody = uuid::Uuid::now_v7().to_string();

    let directory = ContactGrpc::new(env.app.clone(), "the service secret");
    let credential = agora_auth::grpc::ServiceCredential::new("the service secret").unwrap();
    let ask = |ids: Vec<String>| credential.request(GetContactsRequest { user_ids: ids });

    let contacts = directory
        .get_contacts(ask(vec![carl.clone(), birgitte.clone(), nobody.clone(), carl.clone()]))
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(contacts.len(), 3, "each id once: {contacts:?}");
    assert!(contacts[&carl].found);
    assert_eq!(contacts[&carl].name, "Carl Citizen");
    assert!(!contacts[&birgitte].found && contacts[&birgitte].name.is_empty(), "an erased person is not found");
    assert!(!contacts[&nobody].found, "nor is someone who never was");

    let refused = directory.get_contacts(ask(vec![carl.clone(), "'; DROP TABLE users".into()])).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("user_ids") && refused.message().contains("DROP"), "{refused:?}");
    let too_many = directory.get_contacts(ask(vec![carl.clone(); 1001])).await.unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert!(too_many.message().contains("at most 1000"), "{too_many:?}");

    let stranger = agora_auth::grpc::ServiceCredential::new("a guess").unwrap();
    let refused =
        directory.get_contacts(stranger.request(GetContactsRequest { user_ids: vec![carl] })).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "only Agora's services may look people up");
}

/// An administrator gives a colleague a role while the user list runs behind (nothing applies
/// it until the role is written): the list she reads right after the answer already shows it,
/// because the command waits for the read model.
async fn a_role_assigned_is_in_the_user_list_read_right_after(backend: Backend) {
    let Some(env) = env(backend, true, vec![], TestClock::new()).await else { return };
    let admin = env.app.dev_login("admin").await.unwrap();
    let admin = env.app.verifier().verify(&admin.access_token).unwrap();
    let erik = env.app.dev_login("erik").await.unwrap().user.user_id;
    env.runner.catch_up().await.unwrap();
    let waiting = env.app_on(env.store.clone().waiting_for_read_models(std::time::Duration::from_secs(60))).await;
    let administrator = tokio::spawn(async move {
        waiting.assign_role(&admin, erik, Role::HearingCreator).await.unwrap();
        let users = waiting.list_users(&admin).await.unwrap();
        users.into_iter().find(|u| u.user_id == erik).map(|u| u.roles)
    });
    agora_eventstore::testing::eventually(30, "the role in the log", || async {
        let events = env.store.read_stream(USER_AGGREGATE, &erik.to_string(), 0).await.unwrap();
        events.iter().any(|e| e.event_type == "RoleAssigned").then_some(())
    })
    .await;
    env.runner.catch_up().await.unwrap();
    let roles = administrator.await.unwrap();
    assert_eq!(roles, Some(vec![Role::HearingCreator]), "the list read right after the role was given shows it");
}
