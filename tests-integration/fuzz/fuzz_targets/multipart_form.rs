//! A multipart/form-data body as the gateway reads a response or an upload: whatever the bytes,
//! the answer is the form or a client error (400 or 413), never a panic or a server error.
#![no_main]

use agora_gateway::api::read_multipart;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "agora-fuzz";

fuzz_target!(|body: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else { return };
    runtime.block_on(async {
        let request = Request::builder()
            .method("POST")
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(Body::from(body.to_vec()))
            .expect("a request from constant parts");
        let multipart = match Multipart::from_request(request, &()).await {
            Ok(multipart) => multipart,
            Err(rejection) => {
                assert!(rejection.status().is_client_error(), "{}", rejection.body_text());
                return;
            }
        };
        match read_multipart(multipart).await {
            Ok(form) => {
                for file in &form.files {
                    assert!(!file.name.is_empty() || !file.content.is_empty(), "an empty file input was kept");
                }
            }
            Err(problem) => assert!(matches!(problem.status, 400 | 413), "{} {}", problem.status, problem.detail),
        }
    });
});
