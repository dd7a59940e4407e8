//! The one-click unsubscribe link every message carries (RFC 8058): `POST /afmeld/<token>`
//! stops that kind of message to that recipient at once; `GET` shows a page with the same
//! button, for a person who follows the link (no script needed). The token is signed, so
//! nobody can unsubscribe someone else; the opt-out is kept, and the sender skips what it
//! covers.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use agora_eventstore::{DbTx, Store, StoreError, on_reader, on_tx};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::message::UnsubscribeSigner;

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_optouts (
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (recipient, kind))"];

/// What an unsubscribe token stops: `<recipient reference>:<kind>`.
pub fn scope(recipient: &str, kind: &str) -> String {
    format!("{recipient}:{kind}")
}

/// Which of `(recipient, kind)` opted out, in one query for a batch of messages.
pub async fn opted_out_of(store: &Store, asked: &[(String, &str)]) -> Result<HashSet<(String, String)>, StoreError> {
    let recipients: Vec<&str> =
        asked.iter().map(|(recipient, _)| recipient.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut opted_out = HashSet::new();
    for chunk in recipients.chunks(RECIPIENTS_AT_ONCE) {
        let sql = format!(
            "SELECT recipient, kind FROM notification_optouts WHERE recipient IN {}",
            agora_eventstore::placeholders(store.is_postgres(), 1, chunk.len())
        );
        let rows: Vec<(String, String)> = on_reader!(store.backend(), pool => {
            let mut query = sqlx::query_as(&sql);
            for recipient in chunk {
                query = query.bind(*recipient);
            }
            query.fetch_all(pool).await?
        });
        opted_out.extend(rows);
    }
    let asked: HashSet<(&str, &str)> = asked.iter().map(|(recipient, kind)| (recipient.as_str(), *kind)).collect();
    opted_out.retain(|(recipient, kind)| asked.contains(&(recipient.as_str(), kind.as_str())));
    Ok(opted_out)
}

/// Recipients asked about in one query: well under either database's limit of parameters.
const RECIPIENTS_AT_ONCE: usize = 500;

async fn opt_out_in(tx: &mut DbTx, recipient: &str, kind: &str) -> Result<(), StoreError> {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    on_tx!(tx, conn => {
        sqlx::query("INSERT INTO notification_optouts (recipient, kind, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(recipient)
            .bind(kind)
            .bind(at)
            .execute(&mut **conn)
            .await?;
    });
    Ok(())
}

#[derive(Clone)]
struct Unsubscribe {
    store: Store,
    signer: Arc<UnsubscribeSigner>,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"da\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\n<body style=\"font-family: \
         sans-serif; max-width: 36rem; margin: 3rem auto; line-height: 1.5\">\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

fn refused() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Linket virker ikke",
        "<p>Afmeldingslinket er ugyldigt. / The unsubscribe link is not valid.</p>",
    )
}

async fn confirm(State(state): State<Unsubscribe>, Path(token): Path<String>) -> Response {
    if state.signer.verify(&token).is_err() {
        return refused();
    }
    // The token is base64url and a dot: nothing in it needs escaping in the form's action.
    page(
        StatusCode::OK,
        "Afmeld e-mails",
        &format!(
            "<p>Vil du afmelde denne slags e-mails fra Agora? / Unsubscribe from these e-mails?</p>\n\
             <form method=\"post\" action=\"/afmeld/{token}\"><button type=\"submit\">Afmeld / Unsubscribe</button></form>"
        ),
    )
}

async fn unsubscribe(State(state): State<Unsubscribe>, Path(token): Path<String>) -> Response {
    let Ok(what) = state.signer.verify(&token) else { return refused() };
    let Some((recipient, kind)) = what.rsplit_once(':') else { return refused() };
    let done = async {
        // A subscription's messages stop with the subscription.
        if let Some(subscription) = recipient.strip_prefix("subscription:") {
            return match crate::subscriptions::end(&state.store, subscription, None).await {
                Ok(_) | Err(crate::subscriptions::SubscribeError::NotFound) => Ok(()),
                Err(e) => Err(StoreError::Database(sqlx::Error::Protocol(e.to_string()))),
            };
        }
        let mut tx = state.store.begin().await?;
        opt_out_in(&mut tx, recipient, kind).await?;
        tx.commit().await.map_err(StoreError::from)
    };
    match done.await {
        Ok(()) => {
            page(StatusCode::OK, "Du er afmeldt", "<p>Du får ikke flere af disse e-mails. / You are unsubscribed.</p>")
        }
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Prøv igen",
                "<p>Afmeldingen kunne ikke gemmes lige nu. / Try again.</p>",
            )
        }
    }
}

/// A page with the button: link checkers that fetch every link confirm nothing.
async fn confirm_subscription_page(State(state): State<Unsubscribe>, Path(token): Path<String>) -> Response {
    if state.signer.verify(&token).is_err() {
        return refused();
    }
    page(
        StatusCode::OK,
        "Bekræft abonnement",
        &format!(
            "<p>Bekræft, at du vil have besked på denne adresse. / Confirm that you want to be told at this address.</p>\n\
             <form method=\"post\" action=\"/abonnement/bekraeft/{token}\"><button type=\"submit\">Bekræft / Confirm</button></form>"
        ),
    )
}

async fn confirm_subscription(State(state): State<Unsubscribe>, Path(token): Path<String>) -> Response {
    match crate::subscriptions::confirm(&state.store, &state.signer, &token).await {
        Ok(_) => page(
            StatusCode::OK,
            "Abonnementet er bekræftet",
            "<p>Du får besked, når der er nyt. / You will be told when there is news.</p>",
        ),
        Err(crate::subscriptions::SubscribeError::Invalid(_) | crate::subscriptions::SubscribeError::NotFound) => {
            refused()
        }
        Err(e) => {
            tracing::error!(error = %e, "confirm subscription");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Prøv igen",
                "<p>Bekræftelsen kunne ikke gemmes lige nu. / Try again.</p>",
            )
        }
    }
}

/// `GET` and `POST /afmeld/{token}`; `GET` and `POST /abonnement/bekraeft/{token}` (double opt-in).
pub fn routes(store: Store, signer: Arc<UnsubscribeSigner>) -> axum::Router {
    axum::Router::new()
        .route("/afmeld/{token}", axum::routing::get(confirm).post(unsubscribe))
        .route("/abonnement/bekraeft/{token}", axum::routing::get(confirm_subscription_page).post(confirm_subscription))
        .with_state(Unsubscribe { store, signer })
}
