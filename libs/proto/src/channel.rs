//! How Agora's services reach each other: a gRPC channel that spreads calls over every
//! replica of the service a name stands for.
//!
//! A channel to one address keeps one HTTP/2 connection and sends every call down it, so a
//! caller behind a Kubernetes ClusterIP or a single DNS answer would load one replica of a
//! scaled-out service and leave the rest idle. Instead the name is resolved again every few
//! seconds (a headless Service answers with every ready pod) and the calls are balanced
//! over a connection to each address. Until the first answer, or when an answer is empty,
//! the name itself is the one endpoint, so nothing is worse than a plain channel.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// How often the name is resolved again: new replicas get calls within this time.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// What a name stands for: the addresses of its replicas.
pub type Resolve =
    Box<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> + Send + Sync>;

/// How calls to one service are made: timeouts for connecting and for each call.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// A channel to the service at `url` (`http://host:port`), connecting when first used and
/// balancing over the addresses the host name resolves to. An IP address, an `https` URL or a
/// process without a tokio runtime gets a plain channel.
pub fn connect_lazy(url: &str, timeouts: Timeouts) -> Result<Channel, String> {
    connect_lazy_with(url, timeouts, Box::new(|host, port| Box::pin(system_resolve(host, port))), RESOLVE_EVERY)
}

async fn system_resolve(host: String, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect())
}

/// [`connect_lazy`] with the name resolution and its interval given: tests stand in for DNS
/// with it.
pub fn connect_lazy_with(url: &str, timeouts: Timeouts, resolve: Resolve, every: Duration) -> Result<Channel, String> {
    let endpoint = endpoint(url, timeouts)?;
    let uri = endpoint.uri().clone();
    let Some(host) = uri.host() else { return Err(format!("'{url}' names no host")) };
    let port = uri.port_u16().unwrap_or(80);
    let address = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    let runtime = tokio::runtime::Handle::try_current();
    let (false, Some("http"), Ok(runtime)) = (address, uri.scheme_str(), runtime) else {
        return Ok(endpoint.connect_lazy());
    };
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let host = host.to_string();
    runtime.spawn(async move {
        // The name itself first, so that calls made before the first answer are served.
        if changes.send(Change::Insert(NAME.to_string(), endpoint)).await.is_err() {
            return;
        }
        let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
        loop {
            let found: BTreeSet<SocketAddr> = match resolve(host.clone(), port).await {
                Ok(addresses) => addresses.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(host, error = %e, "cannot resolve a service's name; calling the replicas known so far");
                    current.clone()
                }
            };
            if !found.is_empty() && found != current {
                for gone in current.difference(&found) {
                    if changes.send(Change::Remove(gone.to_string())).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&current) {
                    let Ok(endpoint) = endpoint_at(&uri, *new, timeouts) else { continue };
                    if changes.send(Change::Insert(new.to_string(), endpoint)).await.is_err() {
                        return;
                    }
                }
                if current.is_empty() && changes.send(Change::Remove(NAME.to_string())).await.is_err() {
                    return;
                }
                current = found;
            }
            tokio::time::sleep(every).await;
            // The channel and its clones are gone: so is the need to resolve.
            if changes.is_closed() {
                return;
            }
        }
    });
    Ok(channel)
}

/// The key of the endpoint that stands for the name until it has been resolved.
const NAME: &str = "name";

fn endpoint(url: &str, timeouts: Timeouts) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request))
}

/// An endpoint at one replica's address that still says the service's name (`:authority`).
fn endpoint_at(uri: &tonic::codegen::http::Uri, address: SocketAddr, timeouts: Timeouts) -> Result<Endpoint, String> {
    let at = format!("http://{address}");
    Ok(endpoint(&at, timeouts)?.origin(uri.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_is_named() {
        let timeouts = Timeouts { connect: Duration::from_secs(1), request: Duration::from_secs(1) };
        let error = connect_lazy("not a url", timeouts).expect_err("refused");
        assert!(error.contains("'not a url' is not a URL"), "{error}");
    }
}
