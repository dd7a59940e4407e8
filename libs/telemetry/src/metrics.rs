//! Agora's Prometheus metrics and the HTTP endpoint that exposes them together
//! with liveness and readiness probes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics text exposition produced by [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Process-wide metrics registry with Agora's metrics, created lazily.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AggregateLabels {
    aggregate_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

/// From 1 ms to about 16 s: a submit takes milliseconds, an export or a feed read seconds.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    transition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Agora's metrics. Services use [`global`]; [`Metrics::new`] exists for isolated tests.
///
/// Counter names are registered without `_total`: the OpenMetrics encoder appends it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_appended: Family<AggregateLabels, Counter>,
    events_published: Counter,
    relay_position: Gauge,
    events_handled: Family<ConsumerLabels, Counter>,
    consumer_position: Family<ConsumerLabels, Gauge>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    hearing_transitions: Family<TransitionLabels, Counter>,
    journal_steps: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with all of Agora's metrics registered and zeroed.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events_appended = Family::<AggregateLabels, Counter>::default();
        registry.register("agora_events_appended", "Events appended to the event store", events_appended.clone());
        let events_published = Counter::default();
        registry.register(
            "agora_events_published",
            "Events published to the bus by the outbox relay",
            events_published.clone(),
        );
        let relay_position = Gauge::default();
        registry.register(
            "agora_relay_position",
            "Global event-store position the outbox relay has published up to",
            relay_position.clone(),
        );
        let events_handled = Family::<ConsumerLabels, Counter>::default();
        registry.register("agora_events_handled", "Events processed by a consumer", events_handled.clone());
        let consumer_position = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "agora_consumer_position",
            "Global event-store position a consumer has processed up to",
            consumer_position.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register("agora_grpc_requests", "gRPC requests served, by status code", grpc_requests.clone());
        let grpc_durations =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "agora_grpc_request_duration_seconds",
            "Time to answer a gRPC request, by service and method",
            grpc_durations.clone(),
        );
        let hearing_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register("agora_hearing_transitions", "Hearing lifecycle transitions", hearing_transitions.clone());
        let journal_steps = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "agora_journal_steps",
            "Journalization steps run against the records system, by outcome (succeeded, retrying, parked)",
            journal_steps.clone(),
        );
        Self {
            journal_steps,
            registry,
            events_appended,
            events_published,
            relay_position,
            events_handled,
            consumer_position,
            grpc_requests,
            grpc_durations,
            hearing_transitions,
        }
    }

    /// `agora_events_appended_total{aggregate_type}`
    pub fn events_appended(&self, aggregate_type: &str, n: u64) {
        self.events_appended.get_or_create(&AggregateLabels { aggregate_type: aggregate_type.to_owned() }).inc_by(n);
    }

    /// `agora_events_published_total`
    pub fn events_published(&self, n: u64) {
        self.events_published.inc_by(n);
    }

    /// `agora_relay_position`
    pub fn relay_position(&self, position: i64) {
        self.relay_position.set(position);
    }

    /// `agora_events_handled_total{consumer}`
    pub fn events_handled(&self, consumer: &str, n: u64) {
        self.events_handled.get_or_create(&ConsumerLabels { consumer: consumer.to_owned() }).inc_by(n);
    }

    /// `agora_consumer_position{consumer}`
    pub fn consumer_position(&self, consumer: &str, position: i64) {
        self.consumer_position.get_or_create(&ConsumerLabels { consumer: consumer.to_owned() }).set(position);
    }

    /// `agora_grpc_requests_total{service,method,code}`
    pub fn grpc_request(&self, service: &str, method: &str, code: &str) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                service: service.to_owned(),
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// `agora_grpc_request_duration_seconds{service,method}`
    pub fn grpc_duration(&self, service: &str, method: &str, seconds: f64) {
        self.grpc_durations
            .get_or_create(&MethodLabels { service: service.to_owned(), method: method.to_owned() })
            .observe(seconds);
    }

    /// `agora_hearing_transitions_total{transition}`
    pub fn hearing_transitions(&self, transition: &str) {
        self.hearing_transitions.get_or_create(&TransitionLabels { transition: transition.to_owned() }).inc();
    }

    /// `agora_journal_steps_total{outcome}`
    pub fn journal_step(&self, outcome: &str) {
        self.journal_steps.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// OpenMetrics text exposition of every metric, ending in `# EOF`; serve it with
    /// [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and our label types encode infallibly, so an
        // error here would be a prometheus-client bug; a partial scrape beats a panic.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// Serves `GET /metrics` (OpenMetrics text of [`global`]), `GET /healthz` (200 "ok") and
/// `GET /readyz` (200 when `ready` is true, 503 otherwise) on `listener` until
/// `shutdown` resolves, then finishes in-flight requests and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_metrics(listener, global(), ready, Router::new(), shutdown).await
}

/// Like [`serve`], with the routes of the services in this process beside the probes (the
/// identity service's `/.well-known/jwks.json`).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    ready: Arc<AtomicBool>,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_metrics(listener, global(), ready, routes, shutdown).await
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: &'static Metrics,
    ready: Arc<AtomicBool>,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready)
        .merge(routes);
    // With the peer address, for the gateway's rate limit per client.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> impl IntoResponse {
    if ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn render_contains_labelled_counters_and_gauges() {
        let metrics = Metrics::new();
        metrics.events_appended("hearing", 3);
        metrics.events_appended("hearing", 2);
        metrics.events_published(7);
        metrics.relay_position(42);
        metrics.events_handled("projector", 1);
        metrics.consumer_position("projector", -1);
        metrics.grpc_request("agora.hearing.v1.HearingService", "CreateHearing", "Ok");
        metrics.grpc_duration("agora.hearing.v1.HearingService", "CreateHearing", 0.003);
        metrics.hearing_transitions("draft_to_published");

        let text = metrics.render();
        // 3 ms falls in the 4 ms bucket and above, not in the 2 ms one.
        for line in [
            "agora_grpc_request_duration_seconds_bucket{le=\"0.002\",service=\"agora.hearing.v1.HearingService\",method=\"CreateHearing\"} 0",
            "agora_grpc_request_duration_seconds_bucket{le=\"0.004\",service=\"agora.hearing.v1.HearingService\",method=\"CreateHearing\"} 1",
            "agora_grpc_request_duration_seconds_count{service=\"agora.hearing.v1.HearingService\",method=\"CreateHearing\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        for line in [
            "# TYPE agora_events_appended counter",
            "agora_events_appended_total{aggregate_type=\"hearing\"} 5",
            "agora_events_published_total 7",
            "# TYPE agora_relay_position gauge",
            "agora_relay_position 42",
            "agora_events_handled_total{consumer=\"projector\"} 1",
            "agora_consumer_position{consumer=\"projector\"} -1",
            "agora_grpc_requests_total{service=\"agora.hearing.v1.HearingService\",method=\"CreateHearing\",code=\"Ok\"} 1",
            "agora_hearing_transitions_total{transition=\"draft_to_published\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Minimal HTTP/1.1 GET; returns (status code, headers+body as text).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("write: {e}"));
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap_or_else(|e| panic!("read: {e}"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
        (status, text)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_tcp() {
        // A private registry, so counters bumped by other tests can't interfere.
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        metrics.hearing_transitions("published_to_closed");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let ready = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, metrics, ready.clone(), Router::new(), async {
            let _ = stopped.await;
        }));

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.to_ascii_lowercase().contains(&format!("content-type: {CONTENT_TYPE}")), "{body}");
        assert!(body.contains("agora_hearing_transitions_total{transition=\"published_to_closed\"} 1"), "{body}");

        let (status, body) = get(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.ends_with("\r\n\r\nok"), "{body}");

        assert_eq!(get(addr, "/readyz").await.0, 503);
        ready.store(true, Ordering::Release);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        assert_eq!(get(addr, "/nope").await.0, 404);

        let _ = stop.send(());
        let result = server.await.unwrap_or_else(|e| panic!("server task: {e}"));
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn public_serve_exposes_the_global_registry() {
        global().events_published(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(AtomicBool::new(true)), async {
            let _ = stopped.await;
        }));
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("agora_events_published_total "), "{body}");
        let _ = stop.send(());
        let result = server.await.unwrap_or_else(|e| panic!("server task: {e}"));
        assert!(result.is_ok(), "{result:?}");
    }
}
