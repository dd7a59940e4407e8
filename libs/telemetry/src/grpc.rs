//! A tower layer for gRPC servers: counts every call in `agora_grpc_requests_total` by
//! service, method and status code, and times it in `agora_grpc_request_duration_seconds`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;

/// Add with `Server::builder().layer(GrpcMetricsLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default().to_string();
    let method = parts.next().unwrap_or_default().to_string();
    (service, method)
}

/// The code of a unary response: an error travels in the headers ("trailers-only"), a
/// success in the trailers, so no code in the headers means OK.
fn code_name(headers: &http::HeaderMap) -> String {
    let code =
        headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    format!("{:?}", tonic::Code::from_i32(code))
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let started = std::time::Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            crate::metrics::global().grpc_duration(&service, &method, started.elapsed().as_secs_f64());
            let code = match &result {
                Ok(response) => code_name(response.headers()),
                Err(_) => "Unavailable".to_string(),
            };
            crate::metrics::global().grpc_request(&service, &method, &code);
            result
        })
    }
}

/// The span every gRPC call runs in, a child of the caller's trace when its metadata
/// carries `traceparent`. For `Server::builder().trace_fn(server_span)`: the parent must be
/// set before the span is entered, which is why it is not done in the handlers.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", path = %request.uri().path());
    let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
    crate::propagation::set_parent_from_grpc(&span, &metadata);
    span
}

/// The connections a gRPC server accepts on `listener`, with Nagle's algorithm off. tonic
/// sets `TCP_NODELAY` only on sockets it binds itself; without it a small reply can wait for
/// the client's delayed ACK (about 40 ms on Linux), which shows as a p99 of 40–50 ms.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|connection| {
        let connection = connection?;
        connection.set_nodelay(true)?;
        Ok(connection)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            split_path("/agora.hearing.v1.HearingService/GetHearing"),
            ("agora.hearing.v1.HearingService".into(), "GetHearing".into())
        );
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_name(&headers), "Ok");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_name(&headers), "NotFound");
    }
}
