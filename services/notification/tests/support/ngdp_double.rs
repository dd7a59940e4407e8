//! A contract double of NgDP, the national Digital Post service, over real HTTP.
#![allow(dead_code)]

/// A letter the double took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub uuid: String,
    /// `CPR` or `CVR`.
    pub id_type: String,
    /// The CPR or CVR number.
    pub recipient: String,
    pub label: String,
    pub text: String,
}

/// A contract double of NgDP (Digital Post): `POST /apis/v1/messages/memo` with a MeMo message,
/// refusing a messageUUID it has already taken with 409, as NgDP does. Keeps what it took.
#[derive(Clone, Default)]
pub struct NgdpDouble {
    pub letters: std::sync::Arc<std::sync::Mutex<Vec<Taken>>>,
    pub posts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// What a letter's receipt says (DELIVERED when not set).
    pub statuses: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    pub url: String,
}

fn between<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<memo:{tag}>");
    let close = format!("</memo:{tag}>");
    xml.split_once(&open).and_then(|(_, rest)| rest.split_once(&close)).map(|(value, _)| value).unwrap_or_default()
}

impl NgdpDouble {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the NgDP double");
        let port = listener.local_addr().expect("address").port();
        let double = NgdpDouble { url: format!("http://127.0.0.1:{port}"), ..Default::default() };
        let state = double.clone();
        let receipts = double.clone();
        let app = axum::Router::new()
            .route(
                "/apis/v1/messages/{uuid}/status",
                axum::routing::get(move |axum::extract::Path(uuid): axum::extract::Path<String>| {
                    let receipts = receipts.clone();
                    async move {
                        let known = receipts.letters.lock().map(|l| l.iter().any(|t| t.uuid == uuid)).unwrap_or(false);
                        if !known {
                            return (axum::http::StatusCode::NOT_FOUND, String::new());
                        }
                        let status = receipts
                            .statuses
                            .lock()
                            .ok()
                            .and_then(|s| s.get(&uuid).cloned())
                            .unwrap_or_else(|| "DELIVERED".into());
                        (
                            axum::http::StatusCode::OK,
                            format!("{{\"status\": \"{status}\", \"reason\": \"ingen digital postkasse\"}}"),
                        )
                    }
                }),
            )
            .route(
                "/apis/v1/messages/memo",
                axum::routing::post(move |body: String| {
                    let state = state.clone();
                    async move {
                        state.posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let uuid = between(&body, "messageUUID").to_string();
                        let Ok(mut letters) = state.letters.lock() else {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        };
                        let id_type = between(between(&body, "Recipient"), "idType").to_string();
                        if uuid.is_empty() || !matches!(id_type.as_str(), "CPR" | "CVR") {
                            return axum::http::StatusCode::BAD_REQUEST;
                        }
                        if letters.iter().any(|taken| taken.uuid == uuid) {
                            return axum::http::StatusCode::CONFLICT;
                        }
                        let content = base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            between(&body, "content"),
                        )
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default();
                        letters.push(Taken {
                            uuid,
                            id_type,
                            recipient: between(&body, "recipientID").to_string(),
                            label: between(&body, "label").to_string(),
                            text: content,
                        });
                        axum::http::StatusCode::ACCEPTED
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        double
    }
}
