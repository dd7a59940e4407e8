//! Carrying the token in gRPC metadata, as `authorization: Bearer <token>`.
//!
//! Server side, [`principal_from_metadata`] (or [`require_principal`]) turns
//! the header into a [`Principal`]; client side, [`bearer`] attaches a token
//! to an outgoing request.

use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{Principal, TokenVerifier};

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// Reads `authorization: Bearer <token>` from gRPC metadata.
///
/// No header → `Ok(None)`: an anonymous (public) caller. A header that is
/// not exactly one `Bearer` token, or a token that does not verify →
/// `Err(Status::unauthenticated(..))` whose message names the problem. A bad
/// token is never downgraded to anonymous access.
pub fn principal_from_metadata(verifier: &TokenVerifier, metadata: &MetadataMap) -> Result<Option<Principal>, Status> {
    let Some(token) = bearer_token(metadata)? else {
        return Ok(None);
    };
    verifier.verify(token).map(Some).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// Like [`principal_from_metadata`], but a missing header is also
/// `UNAUTHENTICATED`: for calls only signed-in callers may make.
pub fn require_principal(verifier: &TokenVerifier, metadata: &MetadataMap) -> Result<Principal, Status> {
    principal_from_metadata(verifier, metadata)?
        .ok_or_else(|| Status::unauthenticated("this call requires an access token (authorization: Bearer …)"))
}

/// The bearer token in the metadata, if there is an `authorization` header.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let mut values = metadata.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Status::unauthenticated("more than one authorization header"));
    }
    let value =
        value.to_str().map_err(|_| Status::unauthenticated("authorization header is not visible ASCII"))?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated("unsupported authorization scheme: expected \"Bearer <token>\""));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::unauthenticated("authorization header has an empty bearer token"));
    }
    Ok(Some(token))
}

/// Client side: adds `authorization: Bearer <token>` to a request's metadata,
/// replacing any authorization header already there.
pub fn bearer<T>(mut request: tonic::Request<T>, token: &str) -> Result<tonic::Request<T>, Status> {
    if token.is_empty() || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(Status::invalid_argument("access token is empty or contains characters not allowed in a header"));
    }
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Status::invalid_argument("access token cannot be sent as a header value"))?;
    request.metadata_mut().insert(AUTHORIZATION, value);
    Ok(request)
}

/// The metadata key carrying the secret Agora's services share with each other.
pub const SERVICE_SECRET: &str = "x-agora-service-secret";

/// The server side of calls only Agora's own services may make (the vault, the records
/// service's reads): the caller presents the shared secret in `x-agora-service-secret`.
#[derive(Clone)]
pub struct ServiceSecret {
    digest: [u8; 32],
}

impl ServiceSecret {
    /// The check for callers that present `secret`.
    pub fn new(secret: &str) -> Self {
        use sha2::Digest;
        Self { digest: sha2::Sha256::digest(secret.as_bytes()).into() }
    }

    /// `UNAUTHENTICATED` without the secret, `PERMISSION_DENIED` with a wrong one; `what` names
    /// the service in the message.
    pub fn check(&self, metadata: &MetadataMap, what: &str) -> Result<(), Status> {
        use sha2::Digest;
        let presented = metadata
            .get(SERVICE_SECRET)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated(format!("{what} answers Agora services only ({SERVICE_SECRET})")))?;
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        // Compared without an early exit, so that timing tells nothing of the secret.
        let differs = digest.iter().zip(self.digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(Status::permission_denied("wrong service secret"));
        }
        Ok(())
    }
}

/// The client side: a request carrying the shared secret.
#[derive(Clone)]
pub struct ServiceCredential {
    secret: MetadataValue<tonic::metadata::Ascii>,
}

impl ServiceCredential {
    /// A credential presenting `secret`; an error when it cannot be a header value.
    pub fn new(secret: &str) -> Result<Self, String> {
        let secret =
            MetadataValue::try_from(secret).map_err(|_| "the service secret is not printable ASCII".to_string())?;
        Ok(Self { secret })
    }

    /// `message` as a request that presents the secret.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(SERVICE_SECRET, self.secret.clone());
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, SigningKey, TokenIssuer};
    use chrono::Duration;
    use tonic::Code;
    use uuid::Uuid;

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let key = SigningKey::generate().unwrap();
        let issuer = TokenIssuer::new(key, "iss", "aud", Duration::minutes(5));
        let verifier = issuer.verifier();
        (issuer, verifier)
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn no_header_is_anonymous() {
        let (_, verifier) = setup();
        assert_eq!(principal_from_metadata(&verifier, &MetadataMap::new()).unwrap(), None);
        let err = require_principal(&verifier, &MetadataMap::new()).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[test]
    fn bearer_round_trip() {
        let (issuer, verifier) = setup();
        let principal = Principal::new(Uuid::new_v4(), Capacity::Citizen);
        let token = issuer.issue(&principal).unwrap();
        let request = bearer(tonic::Request::new(()), &token).unwrap();
        assert_eq!(principal_from_metadata(&verifier, request.metadata()).unwrap(), Some(principal.clone()));
        assert_eq!(require_principal(&verifier, request.metadata()).unwrap(), principal);

        // Scheme is case-insensitive.
        let map = with_header(&format!("bearer {token}"));
        assert!(principal_from_metadata(&verifier, &map).unwrap().is_some());
    }

    #[test]
    fn bad_headers_are_unauthenticated_with_a_reason() {
        let (issuer, verifier) = setup();
        let token = issuer.issue(&Principal::new(Uuid::new_v4(), Capacity::Citizen)).unwrap();
        let cases = [
            ("Basic dXNlcjpwYXNz", "scheme"),
            ("Bearer", "empty"),
            ("Bearer    ", "empty"),
            (token.as_str(), "scheme"),
            ("Bearer not.a.token", "malformed"),
        ];
        for (header, reason) in cases {
            let err = principal_from_metadata(&verifier, &with_header(header)).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{header}");
            assert!(err.message().contains(reason), "{header}: {}", err.message());
        }

        let other = TokenIssuer::new(SigningKey::generate().unwrap(), "iss", "aud", Duration::minutes(5));
        let foreign = other.issue(&Principal::new(Uuid::new_v4(), Capacity::Citizen)).unwrap();
        let err = principal_from_metadata(&verifier, &with_header(&format!("Bearer {foreign}"))).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("key id"), "{}", err.message());

        let mut twice = with_header(&format!("Bearer {token}"));
        twice.append(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let err = principal_from_metadata(&verifier, &twice).unwrap_err();
        assert!(err.message().contains("more than one"));
    }

    #[test]
    fn bearer_refuses_unsendable_tokens_and_replaces_old_header() {
        assert_eq!(bearer(tonic::Request::new(()), "").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(bearer(tonic::Request::new(()), "a b").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(bearer(tonic::Request::new(()), "a\nb").unwrap_err().code(), Code::InvalidArgument);
        let request = bearer(tonic::Request::new(()), "first").unwrap();
        let request = bearer(request, "second").unwrap();
        assert_eq!(bearer_token(request.metadata()).unwrap(), Some("second"));
    }
}
