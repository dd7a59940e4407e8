//! Rate limits per client (address) and per user, as token buckets in this replica's memory.
//! A replica limits what it sees; with several replicas behind a load balancer the limit a
//! client meets is at most the replicas times this, which is what a limit against floods
//! needs. The bucket arithmetic is pure and takes the time as an argument.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Gateway;
use crate::problem::Problem;

/// Requests per second and the burst allowed on top, per key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst of four seconds' worth; 0 turns the limit off.
    pub fn per_second(per_second: f64) -> Option<Rate> {
        (per_second > 0.0).then_some(Rate { per_second, burst: (per_second * 4.0).max(1.0) })
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key` at `now`: `Ok` when there was one, else how long until there is.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        // Forget full buckets now and then, so that a stream of new addresses cannot fill memory.
        if buckets.len() > 100_000 {
            let rate = self.rate;
            buckets.retain(|_, b| refill(rate, *b, now).tokens < rate.burst);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.rate.burst, at: now });
        *bucket = refill(self.rate, *bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate.per_second))
        }
    }
}

fn refill(rate: Rate, bucket: Bucket, now: Instant) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    Bucket { tokens: (bucket.tokens + elapsed * rate.per_second).min(rate.burst), at: now }
}

/// The limits a gateway applies.
#[derive(Default)]
pub struct Limits {
    pub per_client: Option<Limiter>,
    pub per_user: Option<Limiter>,
    /// Take the client's address from the first X-Forwarded-For entry (behind a trusted proxy).
    pub trust_forwarded_for: bool,
}

fn client_address(request: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(first) =
            request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next())
    {
        return first.trim().to_string();
    }
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default()
}

/// The user a request's token names (unchecked: the services check it; a made-up subject
/// only moves a caller into another user's bucket, and the client limit still holds).
fn user_of(request: &Request) -> Option<String> {
    use base64::Engine;
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| crate::session::cookie(request.headers(), crate::session::ACCESS_COOKIE).map(str::to_string))?;
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_string)
}

/// Refuses a body that declares itself larger than the limit, after reading what the client
/// sends of it (up to twice the limit, for at most half a minute): a client that is still
/// writing when the answer comes would otherwise meet a closed connection rather than the 413.
/// Bodies without a declared length are cut off at the limit by the extractors.
pub async fn refuse_oversized(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    use futures::StreamExt;
    let limit = gateway.settings.max_body_bytes as u64;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let Some(length) = declared.filter(|length| *length > limit) else { return next.run(request).await };
    if length <= limit.saturating_mul(2) {
        let mut body = request.into_body().into_data_stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, body.next()).await {}
    }
    // Plain, as the framework's own refusal: under /api/ it becomes a problem.
    let mut answer =
        (axum::http::StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than the {limit} bytes allowed"))
            .into_response();
    answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

pub async fn enforce(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let limits = &gateway.limits;
    let now = Instant::now();
    let mut wait = None;
    if let Some(limiter) = &limits.per_client {
        wait = limiter.take(&client_address(&request, limits.trust_forwarded_for), now).err();
    }
    if wait.is_none()
        && let (Some(limiter), Some(user)) = (&limits.per_user, user_of(&request))
    {
        wait = limiter.take(&user, now).err();
    }
    match wait {
        None => next.run(request).await,
        Some(wait) => {
            let seconds = wait.as_secs().max(1);
            let mut refused =
                Problem::new("rate-limited", format!("too many requests: try again in {seconds} s")).into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                refused.headers_mut().insert(header::RETRY_AFTER, value);
            }
            refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_each_key_has_its_own_bucket() {
        let limiter = Limiter::new(Rate { per_second: 2.0, burst: 3.0 });
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", start).is_ok());
        }
        let wait = limiter.take("a", start).expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.take("b", start).is_ok(), "another client is not held back");
        assert!(limiter.take("a", start + Duration::from_millis(500)).is_ok(), "half a second buys one at 2/s");
        assert!(limiter.take("a", start + Duration::from_millis(500)).is_err());
        assert!(limiter.take("a", start + Duration::from_secs(60)).is_ok(), "refilled, up to the burst");
    }

    #[test]
    fn no_rate_means_no_limit() {
        assert_eq!(Rate::per_second(0.0), None);
        assert_eq!(Rate::per_second(5.0), Some(Rate { per_second: 5.0, burst: 20.0 }));
    }
}
