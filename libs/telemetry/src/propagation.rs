//! W3C trace-context propagation between `tracing` spans and the wire.
//!
//! The helpers use [`TraceContextPropagator`] directly rather than the global
//! propagator: the wire format is fixed across Agora services (gRPC metadata and
//! event-bus headers alike), and not depending on [`crate::init`] having run keeps
//! them usable from tests and tools.
//!
//! They only see real contexts when the subscriber has the `tracing-opentelemetry`
//! layer, which [`crate::init`] always installs.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// W3C `traceparent` value of the current tracing span's OpenTelemetry context, if it
/// has a valid span context.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// W3C `tracestate` of the current span, if it is non-empty. Send it alongside
/// [`current_traceparent`] so vendor state survives the hop.
pub fn current_tracestate() -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove(TRACESTATE).filter(|state| !state.is_empty())
}

/// Trace id (32 hex chars) of the current span, if any.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Makes `span` a child of the remote context in a `traceparent` (and optional
/// `tracestate`) value; ignores malformed values.
///
/// Call it right after creating `span`, before entering it or creating children:
/// OpenTelemetry fixes a span's parent when the span starts.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    set_parent_from(span, &carrier);
}

/// Injects the current context into outgoing gRPC metadata (traceparent/tracestate).
pub fn inject_grpc(metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut MetadataInjector(metadata));
}

/// Extracts the remote context from incoming gRPC metadata and sets it as parent of
/// `span`; requests without (valid) trace context leave `span` a root.
pub fn set_parent_from_grpc(span: &tracing::Span, metadata: &MetadataMap) {
    set_parent_from(span, &MetadataExtractor(metadata));
}

/// A tonic client interceptor that injects the current context, for
/// `FooClient::with_interceptor(channel, inject_interceptor)`.
pub fn inject_interceptor(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_grpc(req.metadata_mut());
    Ok(req)
}

fn set_parent_from(span: &tracing::Span, extractor: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(extractor);
    // An invalid context would make the span a root anyway; skipping it keeps a
    // malformed header from replacing a parent the span already inherited locally.
    if !cx.span().span_context().is_valid() {
        return;
    }
    if let Err(err) = span.set_parent(cx) {
        tracing::debug!(error = %err, "could not attach remote trace context");
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator emits an empty tracestate when there is none; sending it is noise.
        if value.is_empty() {
            return;
        }
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|key| match key {
                KeyRef::Ascii(key) => key.as_str(),
                KeyRef::Binary(key) => key.as_str(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` under a thread-local subscriber with the OpenTelemetry layer, so tests
    /// don't depend on (or fight over) the global one.
    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        use opentelemetry::trace::TracerProvider as _;
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn traceparent_parts(value: &str) -> Vec<String> {
        value.split('-').map(str::to_owned).collect()
    }

    #[test]
    fn no_span_means_no_context() {
        with_otel(|| {
            assert_eq!(current_traceparent(), None);
            assert_eq!(current_trace_id(), None);
        });
    }

    #[test]
    fn remote_parent_comes_back_out_with_same_trace_id() {
        with_otel(|| {
            let span = tracing::info_span!("handle");
            set_parent_from_traceparent(&span, PARENT, Some("agora=1"));
            span.in_scope(|| {
                let tp = current_traceparent().unwrap_or_default();
                let parts = traceparent_parts(&tp);
                assert_eq!(parts.len(), 4, "{tp}");
                assert_eq!(parts[0], "00");
                assert_eq!(parts[1], TRACE_ID);
                // Our own span, not the remote one, is what we pass on.
                assert_ne!(parts[2], "00f067aa0ba902b7");
                assert_eq!(parts[3], "01");
                assert_eq!(current_trace_id().as_deref(), Some(TRACE_ID));
                assert_eq!(current_tracestate().as_deref(), Some("agora=1"));
            });
        });
    }

    #[test]
    fn malformed_traceparent_is_ignored() {
        with_otel(|| {
            let span = tracing::info_span!("handle");
            set_parent_from_traceparent(&span, "00-zz-nope-01", None);
            let id = span.in_scope(current_trace_id).unwrap_or_default();
            assert_eq!(id.len(), 32);
            assert_ne!(id, TRACE_ID);
        });
    }

    #[test]
    fn grpc_metadata_round_trip_keeps_the_trace() {
        with_otel(|| {
            let client = tracing::info_span!("client");
            set_parent_from_traceparent(&client, PARENT, None);
            let request = client.in_scope(|| inject_interceptor(tonic::Request::new(())));
            let request = request.unwrap_or_else(|status| panic!("interceptor failed: {status}"));
            let metadata = request.metadata();
            assert!(metadata.get(TRACEPARENT).is_some());
            assert!(metadata.get(TRACESTATE).is_none(), "empty tracestate was sent");

            let server = tracing::info_span!("server");
            set_parent_from_grpc(&server, metadata);
            assert_eq!(server.in_scope(current_trace_id).as_deref(), Some(TRACE_ID));
        });
    }

    #[test]
    fn grpc_without_context_leaves_a_fresh_root() {
        with_otel(|| {
            let server = tracing::info_span!("server");
            set_parent_from_grpc(&server, &MetadataMap::new());
            let id = server.in_scope(current_trace_id).unwrap_or_default();
            assert_eq!(id.len(), 32);
            assert_ne!(id, TRACE_ID);
        });
    }
}
