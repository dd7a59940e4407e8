//! Errors as RFC 9457 problem details. Each kind has a stable `type` (a path under
//! `/api/v1/problems/`, which explains it) so clients can branch on it; the `detail` is the
//! service's own message, which names what is wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The kinds of problem the API reports, with their status and a sentence on each.
pub const KINDS: &[(&str, u16, &str)] = &[
    ("invalid-input", 400, "The request names something wrong: a field, a value or a file. The detail says which."),
    ("unauthenticated", 401, "No valid token or session: log in, or refresh the access token."),
    ("forbidden", 403, "The caller is known but may not do this."),
    ("csrf", 403, "A form or a cookie-authenticated request came without a valid CSRF token."),
    ("not-found", 404, "No such hearing, response, file or route, or none the caller may see."),
    ("wrong-state", 409, "The thing is not in a state that allows this (a hearing not open for responses, say)."),
    ("conflict", 409, "Someone else changed it at the same time, or it exists already; read again and retry."),
    ("too-large", 413, "The body or a file is larger than allowed."),
    ("unsupported-media-type", 415, "The body is not of a content type this endpoint reads."),
    ("rate-limited", 429, "Too many requests; wait and retry."),
    ("unavailable", 503, "A service is not reachable right now; the request may be retried."),
    ("timeout", 504, "A service did not answer in time; the request may be retried."),
    ("internal", 500, "Something failed on our side; it is logged."),
];

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A stable URI reference naming the kind, e.g. `/api/v1/problems/not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For invalid input: what is wrong with each field, so a form can show it beside the field.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub violations: Vec<Violation>,
}

/// What is wrong with one field.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

/// The metadata in which the hearing service lists the violations of a refused command.
const VIOLATIONS_METADATA: &str = "agora-violations";

impl Problem {
    pub fn new(kind: &str, detail: impl Into<String>) -> Self {
        let (name, status, title) = KINDS.iter().find(|(name, ..)| *name == kind).copied().unwrap_or((
            "internal",
            500,
            "Something failed on our side; it is logged.",
        ));
        Self {
            kind: format!("/api/v1/problems/{name}"),
            title: title.to_string(),
            status,
            detail: detail.into(),
            violations: Vec::new(),
        }
    }

    /// The short name of the kind (`not-found`).
    pub fn name(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or_default()
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new("invalid-input", detail)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let kind = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => "invalid-input",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "forbidden",
            Code::NotFound => "not-found",
            Code::FailedPrecondition => "wrong-state",
            Code::AlreadyExists | Code::Aborted => "conflict",
            Code::ResourceExhausted => "rate-limited",
            // Unknown is what the client library reports when the connection broke during the
            // call (the service's process died): worth a retry, as is Unavailable.
            Code::Unavailable | Code::Unknown => "unavailable",
            Code::DeadlineExceeded | Code::Cancelled => "timeout",
            _ => "internal",
        };
        if kind == "internal" {
            // The service's message may say more than a stranger should read.
            tracing::error!(code = ?status.code(), message = status.message(), "a service failed");
            return Problem::new(kind, "the request could not be completed");
        }
        if kind == "unavailable" || kind == "timeout" {
            tracing::warn!(code = ?status.code(), message = status.message(), "a service is not reachable");
        }
        let mut problem = Problem::new(kind, status.message());
        if let Some(json) = status.metadata().get(VIOLATIONS_METADATA).and_then(|v| v.to_str().ok()) {
            problem.violations = serde_json::from_str(json).unwrap_or_default();
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Every refusal under `/api/` as a problem: what the framework answers by itself (a method the
/// route does not have, a path parameter that does not parse) comes as plain text otherwise.
pub async fn api_errors_as_problems(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !api || is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let kind = match status.as_u16() {
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not-found",
        409 => "conflict",
        413 => "too-large",
        415 => "unsupported-media-type",
        429 => "rate-limited",
        503 => "unavailable",
        504 => "timeout",
        500..=599 => "internal",
        _ => "invalid-input",
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let (_, body) = response.into_parts();
    let detail = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(text) if !text.is_empty() && kind != "internal" => String::from_utf8_lossy(&text).into_owned(),
        _ => status.canonical_reason().unwrap_or("refused").to_lowercase(),
    };
    let mut problem = Problem::new(kind, detail);
    // Keep the status the framework chose (405 Method Not Allowed, say), not the kind's usual one.
    problem.status = status.as_u16();
    let mut response = problem.into_response();
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// The content type of every refusal (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// Completes the OpenAPI document with the refusals each operation can answer with, so that a
/// client generated from it knows every status it must handle, and says that they come as
/// `application/problem+json`. Which ones follow from the operation's shape rather than from
/// each handler's annotations, which would repeat the same lines sixty times and drift:
/// - every operation: 401 (a forged, expired or revoked token is refused even where none is
///   needed), 413 (a request that declares a body over the limit, whatever the operation),
///   429 (the rate limits), 500 (logged, its detail withheld), 503 and 504 (a service not
///   reachable or not answering);
/// - with parameters or a body: 400 (one that does not parse or breaks a rule);
/// - with a path parameter: 404 (no such thing, or none the caller may see);
/// - with a JSON body: 415 (a body of another type; the other bodies are read whatever their
///   type says);
/// - with a required token, and every command: 403 (the caller may not do this; a command
///   from a browser session without its CSRF token);
/// - a command (POST, PUT, PATCH, DELETE): 409 (the wrong state, or a concurrent change).
pub fn document_refusals(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let problem = |status: u16| {
        let titles: Vec<&str> = KINDS.iter().filter(|(_, s, _)| *s == status).map(|(_, _, title)| *title).collect();
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        RefOr::T(ResponseBuilder::new().description(titles.join(" Or: ")).content(PROBLEM_JSON, content).build())
    };
    let complete = |path: &str, operation: &mut Operation, command: bool| {
        let parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let body = operation.request_body.is_some();
        let json_body = operation.request_body.as_ref().is_some_and(|b| b.content.contains_key("application/json"));
        let token_required = operation.security.as_ref().is_some_and(|s| !s.is_empty());
        let mut statuses = vec![401, 413, 429, 500, 503, 504];
        statuses.extend(
            [
                (parameters || body, 400),
                (path.contains('{'), 404),
                (json_body, 415),
                (token_required || command, 403),
                (command, 409),
            ]
            .into_iter()
            .filter_map(|(applies, status)| applies.then_some(status)),
        );
        let responses = &mut operation.responses.responses;
        for status in statuses {
            responses.entry(status.to_string()).or_insert_with(|| problem(status));
        }
        // Refusals declared by hand say application/json; what is sent is a problem.
        for (status, response) in responses.iter_mut() {
            let refusal = status.parse::<u16>().is_ok_and(|status| status >= 400);
            if let (true, RefOr::T(response)) = (refusal, response)
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM_JSON.to_string(), content);
            }
        }
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        for (operation, command) in [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ] {
            if let Some(operation) = operation {
                complete(path, operation, command);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses the document gives an operation, each with the content type it comes in.
    fn documented(method: &str, path: &str) -> Vec<(String, Vec<String>)> {
        let (_, openapi) = crate::api::router();
        let item = openapi.paths.paths.get(path).unwrap_or_else(|| panic!("no path {path}"));
        let operation = match method {
            "get" => &item.get,
            "post" => &item.post,
            _ => &item.delete,
        };
        let operation = operation.as_ref().unwrap_or_else(|| panic!("no {method} {path}"));
        operation
            .responses
            .responses
            .iter()
            .map(|(status, response)| match response {
                utoipa::openapi::RefOr::T(r) => (status.clone(), r.content.keys().cloned().collect()),
                utoipa::openapi::RefOr::Ref(_) => (status.clone(), Vec::new()),
            })
            .collect()
    }

    #[test]
    fn the_document_names_every_refusal_an_operation_can_answer_with_as_a_problem() {
        let statuses = |d: &[(String, Vec<String>)]| d.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
        // A public read without parameters: only what any request can meet.
        let public = documented("get", "/api/v1/reference/hearing-types");
        assert_eq!(statuses(&public), ["200", "401", "413", "429", "500", "503", "504"]);
        // A command on a hearing, with a JSON body and a token: all of them.
        let submit = documented("post", "/api/v1/hearings/{hearing_id}/responses");
        for status in ["400", "401", "403", "404", "409", "413", "415", "429", "500", "503", "504"] {
            assert!(statuses(&submit).iter().any(|s| s == status), "submitting a response documents {status}");
        }
        // A command without a token requirement still meets the CSRF check (403); a CSV body is
        // read whatever its type says (no 415).
        assert!(statuses(&documented("post", "/api/v1/me/subscriptions")).iter().any(|s| s == "403"));
        assert!(
            !statuses(&documented("post", "/api/v1/hearings/{hearing_id}/invitees/csv")).iter().any(|s| s == "415")
        );
        for (status, types) in submit.iter().chain(&public) {
            if status.parse::<u16>().is_ok_and(|status| status >= 400) {
                assert_eq!(types, &[PROBLEM_JSON.to_string()], "{status} comes as a problem");
            }
        }
    }

    #[test]
    fn a_service_refusal_keeps_its_message_and_gets_a_stable_type() {
        let problem = Problem::from(tonic::Status::failed_precondition("the hearing is not open for responses"));
        assert_eq!(problem.kind, "/api/v1/problems/wrong-state");
        assert_eq!(problem.status, 409);
        assert_eq!(problem.detail, "the hearing is not open for responses");
        assert_eq!(problem.name(), "wrong-state");
    }

    #[test]
    fn the_violations_a_service_names_come_along_for_the_form() {
        let mut status = tonic::Status::invalid_argument("invalid hearing");
        let json = r#"[{"field":"title","message":"titel skal udfyldes"}]"#;
        status.metadata_mut().insert(VIOLATIONS_METADATA, json.parse().expect("ascii"));
        let problem = Problem::from(status);
        assert_eq!(
            problem.violations,
            vec![Violation { field: "title".into(), message: "titel skal udfyldes".into() }]
        );
    }

    #[test]
    fn an_internal_failure_does_not_leak_the_services_message() {
        let problem = Problem::from(tonic::Status::internal("relation \"events\" does not exist"));
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("relation"), "{}", problem.detail);
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let mut names: Vec<_> = KINDS.iter().map(|(n, ..)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
    }
}
