//! Tests of issuing and verifying tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::jwks;

const ISS: &str = "https://agora.example/identity";
const AUD: &str = "agora";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).expect("valid timestamp")
}

fn key(kid: &str) -> SigningKey {
    SigningKey::generate_with_kid(kid).expect("random key")
}

fn issuer(key: &SigningKey) -> TokenIssuer {
    TokenIssuer::new(key.clone(), ISS, AUD, Duration::minutes(15))
}

fn employee() -> Principal {
    Principal::new(Uuid::new_v4(), Capacity::Employee).with_role(Role::HearingCreator).with_name("Mette Frederiksen")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs arbitrary header and claims with `key`, for tokens the issuer
/// would never produce.
fn forge(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
}

fn claims(principal: &Principal) -> Value {
    let t = now().timestamp();
    json!({
        "iss": ISS, "aud": AUD, "sub": principal.user_id.to_string(),
        "iat": t, "nbf": t, "exp": t + 900, "jti": "j1",
        "capacity": principal.capacity, "roles": principal.roles,
    })
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn round_trip() {
    let k = key("k1");
    let principal = employee().with_role(Role::Administrator);
    let token = issuer(&k).issue_at(&principal, now()).unwrap();
    let verifier = TokenVerifier::new(ISS, AUD).with_signing_key(&k);
    assert_eq!(verifier.verify_at(&token, now()).unwrap(), principal);

    let company = Principal::new(Uuid::new_v4(), Capacity::Company).with_company("org-5e1b7c");
    let token = issuer(&k).issue_at(&company, now()).unwrap();
    assert_eq!(verifier.verify_at(&token, now()).unwrap(), company);
}

#[test]
fn round_trip_with_the_real_clock() {
    let k = key("k1");
    let issuer = issuer(&k);
    let principal = Principal::new(Uuid::new_v4(), Capacity::Citizen);
    let token = issuer.issue(&principal).unwrap();
    assert_eq!(issuer.verifier().verify(&token).unwrap(), principal);
}

#[test]
fn token_is_a_standard_compact_jws() {
    let k = key("k1");
    let principal = employee();
    let token = issuer(&k).issue_at(&principal, now()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(!token.contains('='));

    let raw_header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
    assert_eq!(raw_header, br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);

    let claims = decode_part(parts[1]);
    let t = now().timestamp();
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["sub"], principal.user_id.to_string());
    assert_eq!(claims["iat"], t);
    assert_eq!(claims["nbf"], t);
    assert_eq!(claims["exp"], t + 900);
    assert!(Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    assert_eq!(claims["capacity"], "employee");
    assert_eq!(claims["roles"], json!(["hearing_creator"]));
    assert_eq!(claims["name"], "Mette Frederiksen");
    assert!(claims.get("company").is_none());

    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);

    let verified = issuer(&k).verifier().verify_token_at(&token, now()).unwrap();
    assert_eq!(verified.kid, "k1");
    assert_eq!(verified.token_id.as_deref(), claims["jti"].as_str());
    assert_eq!(verified.issued_at, Some(now()));
    assert_eq!(verified.expires_at, now() + Duration::minutes(15));
}

#[test]
fn each_token_has_its_own_jti() {
    let k = key("k1");
    let p = employee();
    let a = issuer(&k).issue_at(&p, now()).unwrap();
    let b = issuer(&k).issue_at(&p, now()).unwrap();
    assert_ne!(decode_part(a.split('.').nth(1).unwrap())["jti"], decode_part(b.split('.').nth(1).unwrap())["jti"]);
}

#[test]
fn refuses_signature_of_another_key() {
    let trusted = key("k1");
    let impostor = key("k1"); // same kid, different key
    let token = issuer(&impostor).issue_at(&employee(), now()).unwrap();
    let err = issuer(&trusted).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("signature"));
}

#[test]
fn refuses_tampered_payload() {
    let k = key("k1");
    let citizen = Principal::new(Uuid::new_v4(), Capacity::Citizen);
    let token = issuer(&k).issue_at(&citizen, now()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = decode_part(parts[1]);
    claims["roles"] = json!(["administrator"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let err = issuer(&k).verifier().verify_at(&tampered, now()).unwrap_err();
    assert!(matches!(err, AuthError::BadSignature { .. }), "{err}");
}

#[test]
fn refuses_tampered_signature() {
    let k = key("k1");
    let token = issuer(&k).issue_at(&employee(), now()).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes));
    let err = issuer(&k).verifier().verify_at(&tampered, now()).unwrap_err();
    assert!(matches!(err, AuthError::BadSignature { .. }), "{err}");
}

#[test]
fn refuses_alg_none_and_other_algorithms() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let body = b64(&claims(&employee()));

    let none = format!("{}.{body}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})));
    let err = verifier.verify_at(&none, now()).unwrap_err();
    assert!(matches!(err, AuthError::UnsupportedAlgorithm(ref a) if a == "none"), "{err}");
    assert!(err.to_string().contains("algorithm"));

    for alg in ["HS256", "RS256", "ES256", "eddsa", "Ed25519"] {
        let mut h = header("k1");
        h["alg"] = json!(alg);
        let token = forge(&k, &h, &claims(&employee()));
        let err = verifier.verify_at(&token, now()).unwrap_err();
        assert!(matches!(err, AuthError::UnsupportedAlgorithm(_)), "{alg}: {err}");
    }

    let token = forge(&k, &json!({"typ": "JWT", "kid": "k1"}), &claims(&employee()));
    assert!(matches!(verifier.verify_at(&token, now()), Err(AuthError::Malformed(_))));
}

#[test]
fn refuses_unknown_and_missing_kid() {
    let k = key("k1");
    let other = key("k2");
    let token = issuer(&other).issue_at(&employee(), now()).unwrap();
    let err = issuer(&k).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId(ref kid) if kid == "k2"), "{err}");
    assert!(err.to_string().contains("key id"));

    let token = forge(&k, &json!({"alg": "EdDSA", "typ": "JWT"}), &claims(&employee()));
    let err = issuer(&k).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::MissingKeyId), "{err}");
}

#[test]
fn refuses_wrong_issuer() {
    let k = key("k1");
    let stranger = TokenIssuer::new(k.clone(), "https://evil.example", AUD, Duration::minutes(15));
    let token = stranger.issue_at(&employee(), now()).unwrap();
    let err = issuer(&k).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::WrongIssuer { ref found, .. } if found == "https://evil.example"), "{err}");
    assert!(err.to_string().contains("issuer"));

    let mut c = claims(&employee());
    c.as_object_mut().unwrap().remove("iss");
    let err = issuer(&k).verifier().verify_at(&forge(&k, &header("k1"), &c), now()).unwrap_err();
    assert!(matches!(err, AuthError::WrongIssuer { .. }), "{err}");
}

#[test]
fn refuses_wrong_audience_and_accepts_audience_arrays() {
    let k = key("k1");
    let other = TokenIssuer::new(k.clone(), ISS, "some-other-service", Duration::minutes(15));
    let token = other.issue_at(&employee(), now()).unwrap();
    let err = issuer(&k).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience { .. }), "{err}");
    assert!(err.to_string().contains("audience"));

    let mut c = claims(&employee());
    c["aud"] = json!(["other", AUD]);
    assert!(issuer(&k).verifier().verify_at(&forge(&k, &header("k1"), &c), now()).is_ok());
    c["aud"] = json!(["other"]);
    let err = issuer(&k).verifier().verify_at(&forge(&k, &header("k1"), &c), now()).unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience { .. }), "{err}");
}

#[test]
fn expiry_with_leeway() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let token = issuer(&k).issue_at(&employee(), now()).unwrap();
    let exp = now() + Duration::minutes(15);
    assert!(verifier.verify_at(&token, exp - Duration::seconds(1)).is_ok());
    assert!(verifier.verify_at(&token, exp + Duration::seconds(59)).is_ok());
    let err = verifier.verify_at(&token, exp + Duration::seconds(61)).unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired"));

    let strict = issuer(&k).verifier().with_leeway(Duration::zero());
    assert!(matches!(strict.verify_at(&token, exp), Err(AuthError::Expired { .. })));
}

#[test]
fn not_before_with_leeway() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let soon = issuer(&k).issue_at(&employee(), now() + Duration::seconds(59)).unwrap();
    assert!(verifier.verify_at(&soon, now()).is_ok());
    let later = issuer(&k).issue_at(&employee(), now() + Duration::seconds(61)).unwrap();
    let err = verifier.verify_at(&later, now()).unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains("not yet valid"));

    // nbf alone (iat absent) in the future.
    let mut c = claims(&employee());
    c.as_object_mut().unwrap().remove("iat");
    c["nbf"] = json!(now().timestamp() + 3600);
    let err = verifier.verify_at(&forge(&k, &header("k1"), &c), now()).unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid { .. }), "{err}");
}

#[test]
fn refuses_garbage() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let valid = issuer(&k).issue_at(&employee(), now()).unwrap();
    let parts: Vec<&str> = valid.split('.').collect();
    let long = "a".repeat(MAX_TOKEN_LENGTH + 1);
    let garbage = [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.!!!.!!!",
        "...",
        &format!("{}.{}", parts[0], parts[1]),
        &format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
        &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        &format!("{}.{}.AAAA", parts[0], parts[1]),
        &format!("{}.{}.{}", b64(&json!("a string")), parts[1], parts[2]),
        &format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{not json"), parts[1], parts[2]),
        &long,
    ];
    for token in garbage {
        let err = verifier.verify_at(token, now()).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{token:.40}: {err}");
        assert!(err.to_string().starts_with("malformed token"));
    }

    // Validly signed, but the payload is not JSON.
    let input = format!("{}.{}", b64(&header("k1")), URL_SAFE_NO_PAD.encode("hello"));
    let signature = URL_SAFE_NO_PAD.encode(k.sign(input.as_bytes()).to_bytes());
    let err = verifier.verify_at(&format!("{input}.{signature}"), now()).unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err}");
}

#[test]
fn refuses_crit_and_foreign_types() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let mut h = header("k1");
    h["crit"] = json!(["exp"]);
    let err = verifier.verify_at(&forge(&k, &h, &claims(&employee())), now()).unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "{err}");

    let mut h = header("k1");
    h["typ"] = json!("JWE");
    let err = verifier.verify_at(&forge(&k, &h, &claims(&employee())), now()).unwrap_err();
    assert!(matches!(err, AuthError::UnsupportedType(_)), "{err}");

    h["typ"] = json!("at+jwt");
    assert!(verifier.verify_at(&forge(&k, &h, &claims(&employee())), now()).is_ok());
    let mut h = header("k1");
    h.as_object_mut().unwrap().remove("typ");
    assert!(verifier.verify_at(&forge(&k, &h, &claims(&employee())), now()).is_ok());
}

#[test]
fn refuses_bad_claims() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let base = claims(&employee());
    let cases: Vec<(&str, Value)> = vec![
        ("sub", json!("0101901234")),
        ("sub", json!("jens@example.dk")),
        ("sub", json!(Uuid::nil().to_string())),
        ("sub", Value::Null),
        ("capacity", json!("admin")),
        ("capacity", Value::Null),
        ("exp", Value::Null),
        ("exp", json!("tomorrow")),
        ("exp", json!(1e300)),
        ("company", json!("12345678")),
        ("company", json!("DK 1234 5678")),
        ("name", json!("Jens 010190-1234")),
        ("roles", json!("administrator")),
    ];
    for (claim, value) in cases {
        let mut c = base.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(claim);
        } else {
            c[claim] = value.clone();
        }
        let err = verifier.verify_at(&forge(&k, &header("k1"), &c), now()).unwrap_err();
        assert!(matches!(err, AuthError::InvalidClaims(_)), "{claim}={value}: {err}");
    }
}

#[test]
fn lenient_where_the_standard_is() {
    let k = key("k1");
    let verifier = issuer(&k).verifier();
    let p = employee();
    let mut c = claims(&p);
    c["roles"] = json!(["hearing_creator", "moderator", "hearing_creator"]);
    c["exp"] = json!(now().timestamp() as f64 + 900.5);
    c.as_object_mut().unwrap().remove("nbf");
    c.as_object_mut().unwrap().remove("jti");
    c["unknown_claim"] = json!({"x": 1});
    let got = verifier.verify_at(&forge(&k, &header("k1"), &c), now()).unwrap();
    assert_eq!(got.roles, vec![Role::HearingCreator]);
    assert_eq!(got.user_id, p.user_id);
}

#[test]
fn key_rotation() {
    let old = key("2025-01");
    let new = key("2025-07");
    let old_token = issuer(&old).issue_at(&employee(), now()).unwrap();
    let new_token = issuer(&new).issue_at(&employee(), now()).unwrap();

    let both = TokenVerifier::new(ISS, AUD).with_signing_key(&old).with_signing_key(&new);
    assert_eq!(both.kids(), vec!["2025-01", "2025-07"]);
    assert!(both.verify_at(&old_token, now()).is_ok());
    assert!(both.verify_at(&new_token, now()).is_ok());

    let retired = both.clone().without_key("2025-01");
    assert!(retired.verify_at(&new_token, now()).is_ok());
    assert!(matches!(retired.verify_at(&old_token, now()), Err(AuthError::UnknownKeyId(_))));

    let only_new = TokenVerifier::new(ISS, AUD).with_key(new.kid(), new.verifying_key());
    assert!(only_new.verify_at(&new_token, now()).is_ok());
    assert!(matches!(only_new.verify_at(&old_token, now()), Err(AuthError::UnknownKeyId(_))));
}

#[test]
fn jwks_round_trip() {
    let old = key("2025-01");
    let new = key("2025-07");
    let published = jwks(&[&old, &new]);
    // Through text, as a service would fetch it.
    let fetched: Value = serde_json::from_str(&published.to_string()).unwrap();
    let verifier = TokenVerifier::from_jwks(ISS, AUD, &fetched).unwrap();
    for k in [&old, &new] {
        let principal = employee();
        let token = issuer(k).issue_at(&principal, now()).unwrap();
        assert_eq!(verifier.verify_at(&token, now()).unwrap(), principal);
    }
    let stranger = key("2025-01");
    let token = issuer(&stranger).issue_at(&employee(), now()).unwrap();
    assert!(matches!(verifier.verify_at(&token, now()), Err(AuthError::BadSignature { .. })));

    let single = TokenVerifier::new(ISS, AUD).with_jwk(&new.public_jwk()).unwrap();
    assert_eq!(single.kids(), vec!["2025-07"]);
}

#[test]
fn jwks_skips_foreign_keys_and_refuses_unusable_sets() {
    let k = key("k1");
    let mut set = jwks(&[&k]);
    set["keys"].as_array_mut().unwrap().extend([
        json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"}),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "AAAA"}),
    ]);
    let verifier = TokenVerifier::from_jwks(ISS, AUD, &set).unwrap();
    assert_eq!(verifier.kids(), vec!["k1"]);

    let cases = [
        json!({}),
        json!({"keys": []}),
        json!({"keys": [{"kty": "RSA", "kid": "rsa"}]}),
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "not-a-key"}]}),
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": k.public_jwk()["x"]}]}),
        json!({"keys": [k.public_jwk(), key("k1").public_jwk()]}),
    ];
    for set in cases {
        let err = TokenVerifier::from_jwks(ISS, AUD, &set).unwrap_err();
        assert!(matches!(err, AuthError::InvalidJwks(_)), "{set}: {err}");
    }
    // The same key twice is harmless.
    assert!(TokenVerifier::from_jwks(ISS, AUD, &json!({"keys": [k.public_jwk(), k.public_jwk()]})).is_ok());
}

#[test]
fn issuer_refuses_what_must_not_be_signed() {
    let k = key("k1");
    let cvr = Principal::new(Uuid::new_v4(), Capacity::Company).with_company("DK12345678");
    assert!(matches!(issuer(&k).issue_at(&cvr, now()), Err(AuthError::InvalidClaims(_))));
    let cpr = Principal::new(Uuid::new_v4(), Capacity::Citizen).with_name("0101901234");
    assert!(matches!(issuer(&k).issue_at(&cpr, now()), Err(AuthError::InvalidClaims(_))));
    let nil = Principal::new(Uuid::nil(), Capacity::Citizen);
    assert!(matches!(issuer(&k).issue_at(&nil, now()), Err(AuthError::InvalidClaims(_))));

    let p = employee();
    for ttl in [Duration::zero(), Duration::seconds(-5), Duration::milliseconds(500)] {
        let bad = TokenIssuer::new(k.clone(), ISS, AUD, ttl);
        assert!(matches!(bad.issue_at(&p, now()), Err(AuthError::InvalidConfiguration(_))));
    }
    let no_iss = TokenIssuer::new(k.clone(), "", AUD, Duration::minutes(1));
    assert!(matches!(no_iss.issue_at(&p, now()), Err(AuthError::InvalidConfiguration(_))));
    let huge = employee().with_name("x".repeat(MAX_TOKEN_LENGTH));
    assert!(matches!(issuer(&k).issue_at(&huge, now()), Err(AuthError::Encoding(_))));
}

#[test]
fn duplicate_roles_are_issued_once() {
    let k = key("k1");
    let mut p = employee();
    p.roles = vec![Role::Administrator, Role::Administrator, Role::HearingCreator];
    let token = issuer(&k).issue_at(&p, now()).unwrap();
    let got = issuer(&k).verifier().verify_at(&token, now()).unwrap();
    assert_eq!(got.roles, vec![Role::Administrator, Role::HearingCreator]);
}

#[test]
fn error_messages_do_not_echo_long_untrusted_values() {
    let k = key("k1");
    let long_kid = "k".repeat(500);
    let token = forge(&k, &header(&long_kid), &claims(&employee()));
    let err = issuer(&k).verifier().verify_at(&token, now()).unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId(_)));
    assert!(err.to_string().len() < 200, "{err}");
}

/// The example token of `docs/tokens.md`, signed with the RFC 8037 test key.
/// Keeps the documented format and the implementation in step.
#[test]
fn documented_example_verifies() {
    const TOKEN: &str = concat!(
        "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6IjIwMjUtMDctYSJ9.",
        "eyJpc3MiOiJodHRwczovL2lkLmFnb3JhLmV4YW1wbGUiLCJhdWQiOiJhZ29yYSIsInN1YiI6IjAxOTZmM2EyLTdjNDEtN2QyZS05YjFhLTNmNWM4ZTJkNGE2MSIsImlhdCI6MTc2NzI2MTYwMCwibmJmIjoxNzY3MjYxNjAwLCJleHAiOjE3NjcyNjI1MDAsImp0aSI6ImE2OWMzYzI0LWQ1YjgtNGY2NC05OWJkLTAwMmVlMmVlMmFjNiIsImNhcGFjaXR5IjoiY29tcGFueSIsInJvbGVzIjpbXSwiY29tcGFueSI6Im9yZy04YzJmNjFkMCIsIm5hbWUiOiJLYXJlbiBKZW5zZW4ifQ.",
        "YmJ-FPCIiKpQg1YUBC9x9tQ-4wXhhphv8Bzg01N70IhVLV7OvT_KKSHX88GHaDGamehxrndvhlOA-27bQ2t_DA"
    );
    let published = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "2025-07-a", "use": "sig", "alg": "EdDSA",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }]});
    let verifier = TokenVerifier::from_jwks("https://id.agora.example", "agora", &published).unwrap();
    let at = DateTime::parse_from_rfc3339("2026-01-01T10:05:00Z").unwrap().to_utc();
    let principal = verifier.verify_at(TOKEN, at).unwrap();
    assert_eq!(
        principal,
        Principal::new(Uuid::parse_str("0196f3a2-7c41-7d2e-9b1a-3f5c8e2d4a61").unwrap(), Capacity::Company)
            .with_company("org-8c2f61d0")
            .with_name("Karen Jensen")
    );
    let later = DateTime::parse_from_rfc3339("2026-01-01T10:17:00Z").unwrap().to_utc();
    assert!(matches!(verifier.verify_at(TOKEN, later), Err(AuthError::Expired { .. })));

    // The RFC 8037 test key publishes exactly this JWKS.
    let key = SigningKey::from_seed_base64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", "2025-07-a").unwrap();
    assert_eq!(jwks(&[&key]), published);
}

#[test]
fn refusals_are_not_remembered_and_a_withdrawn_key_is_forgotten() {
    let key = SigningKey::generate_with_kid("cache").expect("key");
    let issuer = TokenIssuer::new(key, "iss", "aud", chrono::Duration::seconds(2));
    let principal = crate::Principal::new(uuid::Uuid::now_v7(), crate::Capacity::Citizen);
    // Issued long ago: expired, whether or not it was ever seen.
    let old = issuer.issue_at(&principal, Utc::now() - chrono::Duration::hours(1)).expect("token");
    let verifier = issuer.verifier();
    assert!(verifier.verify(&old).is_err());
    assert!(verifier.verify(&old).is_err(), "a refusal is not remembered as a success");
    let fresh = issuer.issue(&principal).expect("token");
    assert_eq!(verifier.verify(&fresh).expect("valid"), principal);
    assert_eq!(verifier.verify(&fresh).expect("remembered"), principal);
    let without = verifier.without_key("cache");
    assert!(without.verify(&fresh).is_err(), "after the key is withdrawn, the token is refused");
}

#[test]
fn replaced_keys_reach_every_clone_and_builders_do_not() {
    let old = key("2025-01");
    let new = key("2025-07");
    let verifier = TokenVerifier::new(ISS, AUD).with_signing_key(&old);
    let clone = verifier.clone();
    let _extended = clone.clone().with_signing_key(&new);
    assert_eq!(verifier.kids(), vec!["2025-01"], "a builder on a clone changed the original");

    let old_token = issuer(&old).issue(&employee()).unwrap();
    assert!(clone.verify(&old_token).is_ok());
    verifier.replace_keys(&jwks(&[&new])).unwrap();
    assert_eq!(clone.kids(), vec!["2025-07"]);
    let new_token = issuer(&new).issue(&employee()).unwrap();
    assert!(clone.verify(&new_token).is_ok());
    // Remembered verifications of a withdrawn key are forgotten too.
    assert!(matches!(clone.verify(&old_token), Err(AuthError::UnknownKeyId(_))));
    assert!(verifier.replace_keys(&json!({"keys": []})).is_err());
    assert_eq!(clone.kids(), vec!["2025-07"], "a bad key set left the keys as they were");
}

#[test]
fn pseudonymous_references_travel_in_the_refs_claim() {
    let k = key("k1");
    let hash = "00112233445566778899aabbccddeeff";
    let p = employee().with_reference(format!("person:{hash}"));
    let token = issuer(&k).issue_at(&p, now()).unwrap();
    let verifier = TokenVerifier::new(ISS, AUD).with_signing_key(&k);
    assert_eq!(verifier.verify_at(&token, now()).unwrap().references, vec![format!("person:{hash}")]);
    // A reference of another form is dropped, as an unknown role is.
    let mut c = claims(&p);
    c["refs"] = json!([format!("person:{hash}"), "person:0101801234"]);
    let got = verifier.verify_at(&forge(&k, &header("k1"), &c), now()).unwrap();
    assert_eq!(got.references, vec![format!("person:{hash}")]);
}
