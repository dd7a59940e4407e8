//! Observability plumbing shared by every Agora service: one call to [`init`]
//! installs structured logging and OpenTelemetry tracing (exported over OTLP/gRPC
//! when configured), [`propagation`] carries W3C trace context across gRPC and
//! the event bus so a hearing's journey stays one trace, and [`metrics`] holds
//! the Prometheus metrics and the small HTTP server that exposes them with
//! health and readiness probes.

pub mod grpc;
pub mod metrics;
pub mod propagation;

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable naming the OTLP/gRPC collector endpoint.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Environment variable choosing the log format (`json`, `pretty` or `auto`).
pub const LOG_FORMAT_ENV: &str = "AGORA_LOG_FORMAT";
/// Environment variable holding the `tracing` filter directives.
pub const LOG_FILTER_ENV: &str = "RUST_LOG";
/// Filter used when [`LOG_FILTER_ENV`] is unset or empty.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn,opentelemetry_sdk=warn,h2=warn,hyper=warn,tower=warn";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (containers, log shippers), readable otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable single-line text, coloured on a terminal.
    Pretty,
}

impl LogFormat {
    /// Resolves [`LogFormat::Auto`] against the actual stderr.
    fn is_json(self) -> bool {
        match self {
            LogFormat::Json => true,
            LogFormat::Pretty => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        }
    }
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(TelemetryError::InvalidLogFormat(s.to_owned())),
        }
    }
}

/// What [`init`] needs to know; usually built with [`TelemetryConfig::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Reported as the OpenTelemetry `service.name` resource attribute.
    pub service_name: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; `None` disables export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Reads [`OTLP_ENDPOINT_ENV`] and [`LOG_FORMAT_ENV`]. [`LOG_FILTER_ENV`] is read by
    /// [`init`] itself so that a bad filter is reported as an error there.
    ///
    /// An unrecognised `AGORA_LOG_FORMAT` falls back to [`LogFormat::Auto`] with a note on
    /// stderr: a typo in a logging knob should not keep a service from starting, and
    /// logging is not up yet to report it any other way.
    pub fn from_env(service_name: &str) -> Self {
        let log_format = match std::env::var(LOG_FORMAT_ENV) {
            Ok(value) => value.parse().unwrap_or_else(|err| {
                eprintln!("agora-telemetry: {err}; using auto");
                LogFormat::Auto
            }),
            Err(_) => LogFormat::Auto,
        };
        let otlp_endpoint = std::env::var(OTLP_ENDPOINT_ENV)
            .ok()
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty());
        // OpenTelemetry's own variable names the service where an operator sets it.
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| service_name.to_owned());
        Self { service_name, log_format, otlp_endpoint }
    }
}

/// Why [`init`] (or parsing a [`LogFormat`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{LOG_FORMAT_ENV} '{0}' is not one of json, pretty, auto")]
    InvalidLogFormat(String),
    #[error("{LOG_FILTER_ENV} '{filter}' is not a valid tracing filter: {source}")]
    InvalidLogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("{LOG_FILTER_ENV} is not valid UTF-8")]
    LogFilterNotUnicode,
    #[error("{OTLP_ENDPOINT_ENV} '{endpoint}' is not a valid URL: {reason}")]
    InvalidOtlpEndpoint { endpoint: String, reason: String },
    #[error(
        "{OTLP_ENDPOINT_ENV} is set but init() was called outside a Tokio runtime; \
         the OTLP/gRPC exporter needs one"
    )]
    NoTokioRuntime,
    #[error("could not build the OTLP span exporter for '{endpoint}': {source}")]
    OtlpExporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the tracer provider alive; dropping it flushes buffered spans and shuts
/// the provider down. Hold it in `main` for the life of the process.
#[must_use = "dropping the guard shuts tracing export down immediately"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    fn noop() -> Self {
        Self { provider: None }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // Shutdown blocks on the batch processor, whose gRPC export is driven by a
        // task on the Tokio runtime. On a multi-threaded runtime block_in_place lets
        // that task keep running elsewhere instead of starving behind this thread;
        // block_in_place panics on a current-thread runtime, hence the flavour check.
        let shutdown = || provider.shutdown();
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        };
        if let Err(err) = result {
            eprintln!("agora-telemetry: tracer provider shutdown failed: {err}");
        }
    }
}

/// Set once the first [`init`] has got as far as installing; later calls (tests,
/// services embedded in one binary) become no-ops without building a second exporter.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the process-wide `tracing` subscriber and the global W3C propagator.
///
/// The subscriber is an [`EnvFilter`] from `RUST_LOG` (default `info`), a fmt layer on
/// stderr in the configured [`LogFormat`], and a `tracing-opentelemetry` layer. When
/// `otlp_endpoint` is set, spans are exported over OTLP/gRPC with a batch span processor;
/// this requires a Tokio runtime.
///
/// The OpenTelemetry layer is installed even without an endpoint: a service that does not
/// export must still mint trace ids and pass incoming `traceparent`s on to the services
/// it calls, or every trace would break at that hop.
///
/// Calling `init` again after a successful call returns `Ok` with a guard that does
/// nothing. If something else already installed a global subscriber, `init` logs a
/// warning through it and returns `Ok` as well; the guard then has nothing to flush.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = env_filter()?;
    if let Some(endpoint) = &config.otlp_endpoint {
        validate_endpoint(endpoint)?;
    }

    // Harmless to repeat, and doing it first means propagation works for whatever
    // subscriber ends up installed.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    if INSTALLED.load(Ordering::Acquire) {
        return Ok(TelemetryGuard::noop());
    }

    let provider = tracer_provider(&config)?;
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Ok(TelemetryGuard::noop());
    }

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(config.service_name.clone()))
        .with_filter(export_filter());
    let json = config.log_format.is_json();
    let json_layer = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr)
    });

    let installed =
        tracing_subscriber::registry().with(filter).with(json_layer).with(text_layer).with(otel_layer).try_init();

    match installed {
        Ok(()) => {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        Err(err) => {
            // Either another global subscriber was already there (ours is dropped and the
            // provider is unused), or only the `log` bridge failed after ours went in. The
            // guard keeps the provider in both cases, which is right for the second and
            // harmless for the first.
            tracing::warn!(error = %err, "agora-telemetry: global subscriber not fully installed");
        }
    }
    Ok(TelemetryGuard { provider: Some(provider) })
}

fn env_filter() -> Result<EnvFilter, TelemetryError> {
    let directives = match std::env::var(LOG_FILTER_ENV) {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => DEFAULT_LOG_FILTER.to_owned(),
        Err(std::env::VarError::NotUnicode(_)) => return Err(TelemetryError::LogFilterNotUnicode),
    };
    EnvFilter::try_new(&directives).map_err(|source| TelemetryError::InvalidLogFilter { filter: directives, source })
}

/// Spans from the crates that carry the export itself must not be exported: with
/// `RUST_LOG=debug` every batch would otherwise produce spans for the next batch.
/// They still reach the log output.
fn export_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(["h2", "hyper", "tonic", "tower", "opentelemetry"].map(|target| (target, LevelFilter::OFF)))
}

/// Checked here rather than left to the exporter so that a typo in the deployment
/// names the variable instead of surfacing as a transport error.
fn validate_endpoint(endpoint: &str) -> Result<(), TelemetryError> {
    let invalid = |reason: String| TelemetryError::InvalidOtlpEndpoint { endpoint: endpoint.to_owned(), reason };
    let uri: axum::http::Uri = endpoint.parse().map_err(|err| invalid(format!("{err}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(invalid(format!("scheme '{other}' is not http or https"))),
        None => {
            return Err(invalid("missing scheme, expected e.g. http://host:4317".into()));
        }
    }
    if uri.authority().is_none() {
        return Err(invalid("missing host".into()));
    }
    Ok(())
}

fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(builder.build());
    };
    // The tonic channel spawns its worker onto the current runtime and would panic without one.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| TelemetryError::OtlpExporter { endpoint: endpoint.clone(), source })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_known_values_and_names_bad_ones() {
        assert_eq!("JSON".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!(" pretty ".parse::<LogFormat>().ok(), Some(LogFormat::Pretty));
        assert_eq!("auto".parse::<LogFormat>().ok(), Some(LogFormat::Auto));
        let err = "yaml".parse::<LogFormat>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("AGORA_LOG_FORMAT 'yaml' is not one of json, pretty, auto"));
    }

    #[test]
    fn bad_endpoints_are_rejected_with_the_variable_named() {
        for bad in ["not a url", "collector:4317", "ftp://collector:4317", "http://"] {
            let err = validate_endpoint(bad).err().map(|e| e.to_string());
            let msg = err.unwrap_or_else(|| panic!("'{bad}' was accepted"));
            assert!(msg.starts_with(&format!("OTEL_EXPORTER_OTLP_ENDPOINT '{bad}' is not a valid URL: ")), "{msg}");
        }
        assert!(validate_endpoint("http://otel-collector:4317").is_ok());
    }

    #[test]
    fn init_with_bad_endpoint_fails_before_installing_anything() {
        let config = TelemetryConfig {
            service_name: "test".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: Some("::nope".into()),
        };
        assert!(matches!(init(config), Err(TelemetryError::InvalidOtlpEndpoint { .. })));
    }

    #[test]
    fn endpoint_without_runtime_is_an_error_not_a_panic() {
        let config = TelemetryConfig {
            service_name: "test".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
        };
        assert!(matches!(tracer_provider(&config), Err(TelemetryError::NoTokioRuntime)));
    }

    fn exporting_guard() -> TelemetryGuard {
        let config = TelemetryConfig {
            service_name: "test".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
        };
        match tracer_provider(&config) {
            Ok(provider) => TelemetryGuard { provider: Some(provider) },
            Err(err) => panic!("exporter did not build: {err}"),
        }
    }

    // Dropping the guard must neither panic (block_in_place on the wrong flavour)
    // nor hang, on either runtime flavour.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exporting_guard_drops_on_multi_thread_runtime() {
        drop(exporting_guard());
    }

    #[tokio::test]
    async fn exporting_guard_drops_on_current_thread_runtime() {
        drop(exporting_guard());
    }

    #[test]
    fn init_twice_is_ok_and_spans_get_trace_ids() {
        let config =
            TelemetryConfig { service_name: "test".into(), log_format: LogFormat::Pretty, otlp_endpoint: None };
        let first = init(config.clone());
        assert!(first.is_ok(), "{:?}", first.err());
        let second = init(config);
        assert!(matches!(second, Ok(TelemetryGuard { provider: None })));

        // Runs on the global subscriber (this test sets no thread-local one), so it
        // proves init() installed the OpenTelemetry layer without an endpoint.
        let span = tracing::info_span!("after_init");
        let trace_id = span.in_scope(propagation::current_trace_id);
        assert!(trace_id.is_some_and(|id| id.len() == 32));

        // And that remote parents still attach through the export filter wrapping it.
        let span = tracing::info_span!("child_of_remote");
        propagation::set_parent_from_traceparent(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            None,
        );
        assert_eq!(span.in_scope(propagation::current_trace_id).as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
    }
}
