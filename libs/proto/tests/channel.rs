//! The channel between services follows the replicas a name stands for: calls spread over
//! every replica, reach one that joins, and leave one that has gone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_eventstore::testing::eventually;
use agora_proto::channel::{Timeouts, connect_lazy_with};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A gRPC server at `ip` whose health service knows only the service `name`: asking for it
/// tells which replica answered.
async fn replica(ip: &str, port: u16, name: &'static str) -> tokio::task::JoinHandle<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind((ip, port)).await.expect("bind the replica");
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    })
}

/// Which replicas answered `calls` calls.
async fn who_answers(client: &mut HealthClient<tonic::transport::Channel>, calls: usize) -> (usize, usize) {
    let (mut a, mut b) = (0, 0);
    for _ in 0..calls {
        for (name, count) in [("a", &mut a), ("b", &mut b)] {
            let request = HealthCheckRequest { service: name.into() };
            if client.check(request).await.is_ok() {
                *count += 1;
            }
        }
    }
    (a, b)
}

#[tokio::test]
async fn calls_follow_the_replicas_a_name_resolves_to() {
    // Two replicas on one port at two loopback addresses, as two pods behind one name.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let a_address: SocketAddr = ([127, 0, 0, 1], port).into();
    let b_address: SocketAddr = ([127, 0, 0, 2], port).into();
    let _a = replica("127.0.0.1", port, "a").await;
    let _b = replica("127.0.0.2", port, "b").await;

    let answers: Arc<Mutex<std::io::Result<Vec<SocketAddr>>>> = Arc::new(Mutex::new(Ok(vec![a_address])));
    let dns = answers.clone();
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lookups.clone();
    let resolve: agora_proto::channel::Resolve = Box::new(move |host, resolved_port| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!((host.as_str(), resolved_port), ("response.agora.svc", port));
        let answer = match &*dns.lock().expect("lock") {
            Ok(addresses) => Ok(addresses.clone()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(async move { answer })
    });
    let timeouts = Timeouts { connect: Duration::from_secs(2), request: Duration::from_secs(5) };
    let channel =
        connect_lazy_with(&format!("http://response.agora.svc:{port}"), timeouts, resolve, Duration::from_millis(50))
            .expect("a channel");
    let mut client = HealthClient::new(channel);

    // One replica: it answers everything.
    eventually(20, "the one replica answers", || {
        let mut client = client.clone();
        async move { (who_answers(&mut client, 1).await == (1, 0)).then_some(()) }
    })
    .await;
    assert_eq!(who_answers(&mut client, 20).await, (20, 0));

    // A second replica joins (the service was scaled out): calls reach both.
    *answers.lock().expect("lock") = Ok(vec![a_address, b_address]);
    eventually(20, "both replicas answer", || {
        let mut client = client.clone();
        async move {
            let (a, b) = who_answers(&mut client, 20).await;
            (a > 0 && b > 0 && a + b == 20).then_some(())
        }
    })
    .await;

    // The first one goes (scaled in, or a rolling update): calls leave it.
    *answers.lock().expect("lock") = Ok(vec![b_address]);
    eventually(20, "only the remaining replica answers", || {
        let mut client = client.clone();
        async move { (who_answers(&mut client, 20).await == (0, 20)).then_some(()) }
    })
    .await;

    // The name cannot be resolved for a while: the replica known so far still answers.
    *answers.lock().expect("lock") = Err(std::io::Error::other("DNS is down"));
    let failed_from = lookups.load(std::sync::atomic::Ordering::SeqCst);
    eventually(20, "two lookups have failed", || {
        let done = lookups.load(std::sync::atomic::Ordering::SeqCst) >= failed_from + 2;
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(who_answers(&mut client, 10).await, (0, 10));
}
