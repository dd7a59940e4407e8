//! `agora run`: starts the chosen services and their background work, and stops them
//! cleanly on Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_eventstore::Store;
use agora_eventstore::consumer::ProjectionRunner;
use agora_eventstore::jetstream::{Bus, BusConfig};
use agora_eventstore::relay::Relay;
use agora_hearing::app::HearingApp;
use agora_hearing::grpc::HearingGrpc;
use agora_hearing::integration::HearingIntegration;
use agora_hearing::projections::{self, HearingListProjection};
use agora_proto::hearing::v1::hearing_service_server::HearingServiceServer;
use anyhow::Context;
use tokio::sync::watch;

use crate::config::{RunArgs, Settings};

/// Listens for Ctrl-C and SIGTERM from now on, and resolves when either comes. The handlers
/// are installed here, not when the future is first polled, so that a stop sent as soon as the
/// servers answer is not the default action (death by signal).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn shutdown_future(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// The hearing service wired to a store and the vault.
pub fn hearing_app(
    store: &Store,
    settings: &Settings,
    keys: agora_response::personal::Keys,
) -> anyhow::Result<HearingApp> {
    let files = settings.files.open()?;
    Ok(HearingApp::new(store.clone(), files, &settings.pseudonym_key, keys, settings.clock.clone()))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let stop_requested = stop_signal()?;
    let service_name = crate::config::service_name(&args.target);
    let _telemetry = agora_telemetry::init(agora_telemetry::TelemetryConfig::from_env(&service_name))?;
    let settings = args.settings()?;
    if args.check {
        println!("{}", crate::config::describe(&args, &settings));
        return Ok(());
    }
    if settings.gateway_only() {
        return run_gateway(&args, &settings, stop_requested, started).await;
    }
    let mut store = args.connect.store().await?;
    if args.read_model_wait_ms > 0 {
        store = store.waiting_for_read_models(Duration::from_millis(args.read_model_wait_ms));
    }
    let runs = |target: &str| settings.targets.iter().any(|t| t == target);
    let (with_hearing, with_response) = (runs("hearing"), runs("response"));
    let mut projections: Vec<Arc<dyn agora_eventstore::consumer::Projection>> = Vec::new();
    let clock: agora_identity::app::Clock = Arc::new(chrono::Utc::now);
    let identity = match &settings.identity {
        Some(identity_settings) => {
            agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
            projections.push(Arc::new(agora_identity::app::UserListProjection));
            let mut providers = Vec::new();
            for config in settings.login_providers.clone() {
                let id = config.id.clone();
                let provider = agora_identity::oidc::OidcProvider::discover(config, clock.clone())
                    .await
                    .with_context(|| format!("AGORA_LOGIN_PROVIDERS: login provider {id:?}"))?;
                providers.push(provider);
            }
            let app = agora_identity::app::IdentityApp::new(
                store.clone(),
                identity_settings.clone(),
                providers,
                clock.clone(),
            )
            .await
            .context("cannot start the identity service")?;
            Some(app)
        }
        None => None,
    };
    let hearing = if with_hearing {
        projections::migrate(&store).await.context("cannot create the hearing read-model tables")?;
        projections.push(Arc::new(HearingListProjection));
        Some(hearing_app(&store, &settings, personal_data_keys(identity.as_ref(), &settings)?)?)
    } else {
        None
    };
    let verifier = Arc::new(match (&identity, &settings.token_keys) {
        (Some(app), _) => app.verifier(),
        (None, crate::config::TokenKeys::Fixed(verifier)) => verifier.clone(),
        (None, crate::config::TokenKeys::Url(url)) => {
            let verifier = agora_auth::TokenVerifier::new(&args.token_issuer, &args.token_audience);
            refresh_jwks(&verifier, url).await.with_context(|| format!("AGORA_TOKEN_JWKS: cannot read {url}"))?;
            verifier
        }
        (None, crate::config::TokenKeys::Identity) => anyhow::bail!("the identity service is not running here"),
        (None, crate::config::TokenKeys::Unused) => {
            anyhow::bail!("AGORA_TOKEN_JWKS is required: the services here check tokens")
        }
    });
    let response = if with_response {
        agora_response::projections::migrate(&store).await.context("cannot create the response tables")?;
        projections.push(Arc::new(agora_response::projections::ResponseListProjection));
        let (intake, _worker) = agora_response::intake::Intake::start(
            store.clone(),
            agora_response::files::Attachments {
                store: settings.files.open()?,
                scanner: args.clamd.clone().map(|address| agora_response::files::Clamd { address }),
            },
            personal_data_keys(identity.as_ref(), &settings)?,
            settings.clock.clone(),
            agora_response::intake::IntakeConfig::default(),
        );
        Some(agora_response::app::ResponseApp::new(store.clone(), intake, settings.clock.clone()))
    } else {
        None
    };

    let notification = match &settings.notification {
        Some(notification_settings) => {
            use agora_notification::outbox::EmailChannel;
            use agora_notification::recipients::Directory;
            agora_notification::migrate(&store).await.context("cannot create the notification tables")?;
            let config = &notification_settings.config;
            let email: Arc<dyn EmailChannel> = match &config.smtp {
                Some(smtp) => Arc::new(
                    agora_notification::smtp::SmtpChannel::new(smtp)
                        .map_err(|e| anyhow::anyhow!("AGORA_NOTIFICATION_CONFIG smtp: {e}"))?,
                ),
                None => Arc::new(
                    agora_notification::smtp::MailFolder::new(notification_settings.mail_folder.clone(), &config.from)
                        .map_err(|e| anyhow::anyhow!("AGORA_NOTIFICATION_CONFIG: {e}"))?,
                ),
            };
            let directory: Arc<dyn Directory> = match (&identity, &notification_settings.remote_identity) {
                (Some(app), _) => Arc::new(IdentityDirectory(app.clone())),
                (None, Some((url, secret))) => Arc::new(
                    agora_notification::recipients::RemoteDirectory::new(url, secret)
                        .map_err(|e| anyhow::anyhow!(e))?,
                ),
                (None, None) => anyhow::bail!("no identity service for the notification service (AGORA_IDENTITY_URL)"),
            };
            let retry =
                config.retries.policy().map_err(|e| anyhow::anyhow!("AGORA_NOTIFICATION_CONFIG retries: {e}"))?;
            let digital_post: Option<Arc<dyn agora_notification::digital_post::DigitalPostChannel>> =
                match &config.digital_post {
                    Some(ngdp) => Some(Arc::new(
                        agora_notification::digital_post::Ngdp::new(ngdp.clone())
                            .map_err(|e| anyhow::anyhow!("AGORA_NOTIFICATION_CONFIG: {e}"))?,
                    )),
                    None => None,
                };
            let sender = agora_notification::outbox::Sender {
                store: store.clone(),
                keys: personal_data_keys(identity.as_ref(), &settings)?,
                directory,
                email,
                digital_post,
                portal: agora_notification::outbox::Portal {
                    name: config.portal_name.clone(),
                    url: config.portal_url.clone(),
                    unsubscribe: Arc::new(agora_notification::message::UnsubscribeSigner::derived(
                        &settings.pseudonym_key,
                    )),
                },
                retry,
                clock: settings.clock.clone(),
                rate: Arc::new(tokio::sync::Mutex::new(agora_notification::outbox::RateLimit::new(
                    config.messages_per_second,
                    config.burst,
                ))),
            };
            let links = agora_notification::plan::Links {
                portal_url: config.portal_url.clone(),
                message_domain: config.message_domain.clone(),
            };
            Some((sender, links))
        }
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();

    // gRPC with the standard health service and server reflection.
    let grpc_listener = tokio::net::TcpListener::bind(settings.grpc_addr)
        .await
        .with_context(|| format!("AGORA_GRPC_ADDR: cannot listen on {}", settings.grpc_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    // A service in this process is reached where it listens (loopback when on every address).
    let here = {
        let host = match grpc_addr.ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        format!("http://{}", std::net::SocketAddr::new(host, grpc_addr.port()))
    };

    // HTTP: health, readiness, metrics; the portal and the API where the gateway runs.
    let http = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("AGORA_HTTP_ADDR: cannot listen on {}", settings.http_addr))?;
    let mut routes = match &identity {
        Some(app) => jwks_route(app.clone()),
        None => axum::Router::new(),
    };
    if let Some((sender, _)) = &notification {
        // The one-click unsubscribe links every message carries (until the gateway serves them).
        routes =
            routes.merge(agora_notification::unsubscribe::routes(store.clone(), sender.portal.unsubscribe.clone()));
    }
    if let Some(gateway_settings) = &settings.gateway {
        routes = routes.merge(gateway_router(&args, &settings, gateway_settings, &here)?);
    }
    let metrics = agora_telemetry::metrics::serve_with(http, ready.clone(), routes, shutdown_future(&stop_rx));
    tasks.spawn(async move { metrics.await.map_err(anyhow::Error::from) });

    let records = match &settings.records {
        Some(records_settings) => {
            agora_records::store::migrate(&store).await.context("cannot create the records tables")?;
            let config = &records_settings.config;
            let system = config
                .system(records_settings.default_archive.clone())
                .map_err(|e| anyhow::anyhow!("AGORA_RECORDS_CONFIG: {e}"))?;
            let sources = agora_records::sources::GrpcSources::new(
                records_settings.hearing_url.as_deref().unwrap_or(&here),
                records_settings.response_url.as_deref().unwrap_or(&here),
                &records_settings.service_secret,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let worker = agora_records::worker::Worker {
                store: store.clone(),
                system,
                sources: Arc::new(sources),
                retry: config.retry(),
                document_types: config.document_types.clone(),
                clock: settings.clock.clone(),
                concurrency: 4,
            };
            Some((agora_records::app::RecordsApp::new(store.clone()), worker, config.policy()))
        }
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agora_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build gRPC reflection")?;
    let (hearing_service, reference_service) = match &hearing {
        Some(app) => {
            let (h, r) = agora_hearing::grpc::services(app.clone(), verifier.clone());
            (Some(h), Some(r))
        }
        None => (None, None),
    };
    let response_service = response.as_ref().map(|app| agora_response::grpc::service(app.clone(), verifier.clone()));
    let identity_service = identity.as_ref().map(|app| agora_identity::grpc::service(app.clone(), verifier.clone()));
    // The vault answers other processes only where they share the service secret with it.
    let vault_service = match (&identity, &settings.service_secret) {
        (Some(app), Some(secret)) => Some(agora_identity::keyservice::service(app.vault.clone(), secret)),
        _ => None,
    };
    // So do the reads of what the records service files.
    let hearing_records_source = match (&hearing, &settings.service_secret) {
        (Some(app), Some(secret)) => Some(agora_hearing::integration::records_source(app.clone(), secret)),
        _ => None,
    };
    let response_records_source = match (&response, &settings.service_secret) {
        (Some(app), Some(secret)) => Some(agora_response::records::service(app.clone(), secret)),
        _ => None,
    };
    if (hearing.is_some() || response.is_some()) && settings.service_secret.is_none() {
        tracing::warn!(
            "AGORA_SERVICE_SECRET is not set: the records service cannot read this process's hearings and responses"
        );
    }
    let records_service =
        records.as_ref().map(|(app, _, _)| agora_records::grpc::service(app.clone(), verifier.clone()));
    let notification_service = notification.as_ref().map(|(sender, links)| {
        agora_notification::grpc::service(agora_notification::grpc::NotificationGrpc {
            store: store.clone(),
            verifier: verifier.clone(),
            keys: sender.keys.clone(),
            directory: sender.directory.clone(),
            email: sender.email.clone(),
            portal: sender.portal.clone(),
            message_domain: links.message_domain.clone(),
        })
    });
    let contact_service = match (&identity, &settings.service_secret) {
        (Some(app), Some(secret)) => Some(agora_identity::keyservice::contacts(app.clone(), secret)),
        _ => None,
    };
    // The integration events of this store, for the gateway's HTTP feed.
    let feed_service = match (&settings.service_secret, with_hearing || with_response) {
        (Some(secret), true) => Some(crate::feed::service(store.clone(), integration_mappers(&store), secret)),
        _ => None,
    };
    let router = tonic::transport::Server::builder()
        .trace_fn(agora_telemetry::grpc::server_span)
        .layer(agora_telemetry::grpc::GrpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(hearing_service)
        .add_optional_service(reference_service)
        .add_optional_service(response_service)
        .add_optional_service(identity_service)
        .add_optional_service(vault_service)
        .add_optional_service(hearing_records_source)
        .add_optional_service(response_records_source)
        .add_optional_service(records_service)
        .add_optional_service(contact_service)
        .add_optional_service(notification_service)
        .add_optional_service(feed_service);
    let incoming = agora_telemetry::grpc::incoming(grpc_listener);
    let grpc_shutdown = shutdown_future(&stop_rx);
    tasks.spawn(async move {
        router.serve_with_incoming_shutdown(incoming, grpc_shutdown).await.map_err(anyhow::Error::from)
    });

    // Read models first, so the demo seed and the scheduler see what exists; kept up from
    // then on before the seed's commands, which wait for them.
    let runner = ProjectionRunner::new(store.clone(), projections);
    runner.catch_up().await.context("cannot bring the read models up to date")?;
    tasks.spawn(until_stopped(runner.clone().run(shutdown_future(&stop_rx))));
    if let Some(app) = &hearing {
        if settings.embedded
            && !args.no_demo
            && crate::demo::seed(app, &runner).await.context("cannot seed demo data")?
        {
            runner.catch_up().await.context("cannot bring the read models up to date")?;
            tracing::info!("seeded demo reference data and hearings");
        }
        if let (Some(identity), true) = (&identity, settings.embedded && !args.no_demo) {
            crate::demo::seed_terms(identity).await.context("cannot seed the demo terms")?;
        }
        tasks.spawn(until_stopped(agora_hearing::scheduler::run(
            app.clone(),
            Duration::from_secs(args.scheduler_interval),
            shutdown_future(&stop_rx),
        )));
    }
    if let (Some(app), true) = (&response, args.retention_days > 0) {
        let (app, days) = (app.clone(), args.retention_days);
        tasks.spawn(until_stopped(every(Duration::from_secs(3600), shutdown_future(&stop_rx), move || {
            let app = app.clone();
            async move {
                if let Err(e) = agora_response::retention::apply(&app, days, app.now()).await {
                    tracing::warn!(error = %e, "retention could not run; it tries again");
                }
            }
        })));
    }
    match (&identity, &settings.token_keys) {
        // Another replica may rotate the keys; a key's time to sign or retire comes.
        (Some(app), _) => {
            let app = app.clone();
            tasks.spawn(until_stopped(every(Duration::from_secs(60), shutdown_future(&stop_rx), move || {
                let app = app.clone();
                async move {
                    if let Err(e) = app.refresh_verifier().await {
                        tracing::warn!(error = %e, "cannot read the signing keys again");
                    }
                }
            })));
        }
        (None, crate::config::TokenKeys::Url(url)) => {
            let (verifier, url) = (verifier.clone(), url.clone());
            tasks.spawn(until_stopped(every(Duration::from_secs(300), shutdown_future(&stop_rx), move || {
                let (verifier, url) = (verifier.clone(), url.clone());
                async move {
                    if let Err(e) = refresh_jwks(&verifier, &url).await {
                        tracing::warn!(error = %e, url = %url, "cannot read the token keys again; keeping the ones known");
                    }
                }
            })));
        }
        _ => {}
    }

    let bus = if settings.embedded {
        None
    } else {
        let mut bus_config = BusConfig::new(&args.nats_url, &args.nats_prefix);
        bus_config.replicas = args.nats_replicas;
        Some(
            Bus::connect(bus_config)
                .await
                .with_context(|| format!("AGORA_NATS_URL: cannot use JetStream at {}", args.nats_url))?,
        )
    };
    // Every service here has integration events for the relay to publish.
    if let Some(bus) = &bus {
        let relay = Relay::new(store.clone(), bus.clone(), integration_mappers(&store));
        tasks.spawn(until_stopped(relay.run(shutdown_future(&stop_rx))));
    }
    // Each service learns what it needs from the others' integration events: from JetStream
    // when distributed, from the local log when embedded.
    let mut handlers: Vec<Arc<dyn agora_eventstore::jetstream::IntegrationHandler>> = Vec::new();
    if let Some(app) = &response {
        // Hearings' terms, filed hearings (retention waits for them), erasures.
        handlers.push(Arc::new(agora_response::hearings::HearingTermsHandler));
        handlers.push(Arc::new(agora_response::hearings::JournalizationHandler));
        handlers.push(Arc::new(agora_response::erasure::ErasureHandler { app: app.clone() }));
    }
    if let Some(app) = &hearing {
        // The case number the records service opened.
        handlers.push(Arc::new(agora_hearing::integration::CaseNumberHandler { app: app.clone() }));
    }
    if let Some((app, worker, policy)) = &records {
        handlers.push(Arc::new(agora_records::integration::HearingJournalHandler {
            store: store.clone(),
            policy: policy.clone(),
        }));
        let (worker, wake) = (worker.clone(), app.wake.clone());
        tasks.spawn(until_stopped(worker.run(Duration::from_secs(2), wake, shutdown_future(&stop_rx))));
    }
    if let Some((sender, links)) = &notification {
        // Who is told what, from the hearing and response services' events.
        handlers.push(Arc::new(agora_notification::events::EventsHandler::new(store.clone(), links.clone())));
        let digital_post = sender.digital_post.clone();
        // Webhooks: the deliveries get the messages' retry policy.
        let webhooks =
            agora_notification::webhooks::WebhookSender::new(store.clone(), sender.retry, sender.clock.clone())
                .map_err(|e| anyhow::anyhow!(e))?;
        tasks.spawn(until_stopped(webhooks.run(Duration::from_secs(2), shutdown_future(&stop_rx))));
        let sender = sender.clone();
        tasks.spawn(until_stopped(sender.run(Duration::from_secs(2), shutdown_future(&stop_rx))));
        // Digital Post reports whether its letters were delivered.
        if let Some(digital_post) = digital_post {
            let (store, clock) = (store.clone(), settings.clock.clone());
            tasks.spawn(until_stopped(every(Duration::from_secs(60), shutdown_future(&stop_rx), move || {
                let (store, digital_post, now) = (store.clone(), digital_post.clone(), clock());
                async move {
                    if let Err(e) = agora_notification::receipts::collect(&store, digital_post.as_ref(), now).await {
                        tracing::warn!(error = %e, "Digital Post receipts could not be collected; it tries again");
                    }
                }
            })));
        }
        // The daily digest is queued once it is 07:00 in Copenhagen (once per day, whoever ticks).
        let (store, links, clock) = (store.clone(), links.clone(), settings.clock.clone());
        tasks.spawn(until_stopped(every(Duration::from_secs(60), shutdown_future(&stop_rx), move || {
            let (store, links, now) = (store.clone(), links.clone(), clock());
            async move {
                if let Err(e) = agora_notification::digest::queue_due(&store, now, &links).await {
                    tracing::warn!(error = %e, "the daily digest could not be queued; it tries again");
                }
            }
        })));
    }
    for handler in handlers {
        match &bus {
            Some(bus) => {
                let (bus, store, shutdown) = (bus.clone(), store.clone(), shutdown_future(&stop_rx));
                tasks.spawn(async move {
                    agora_eventstore::jetstream::consume(&bus, store, handler, shutdown)
                        .await
                        .map_err(anyhow::Error::from)
                });
            }
            None => {
                let feed = agora_eventstore::consumer::LocalIntegrationFeed {
                    store: store.clone(),
                    mapper: integration_mappers(&store),
                    handler,
                };
                feed.catch_up().await.context("cannot bring the services up to date with each other")?;
                tasks.spawn(until_stopped(feed.run(shutdown_future(&stop_rx))));
            }
        }
    }

    if with_hearing {
        health.set_serving::<HearingServiceServer<HearingGrpc>>().await;
    }
    if identity.is_some() {
        health
            .set_serving::<agora_proto::identity::v1::identity_service_server::IdentityServiceServer<
                agora_identity::grpc::IdentityGrpc,
            >>()
            .await;
    }
    if notification.is_some() {
        health
            .set_serving::<agora_proto::notification::v1::notification_service_server::NotificationServiceServer<
                agora_notification::grpc::NotificationGrpc,
            >>()
            .await;
    }
    if records.is_some() {
        health
            .set_serving::<agora_proto::records::v1::records_service_server::RecordsServiceServer<
                agora_records::grpc::RecordsGrpc,
            >>()
            .await;
    }
    if with_response {
        health
            .set_serving::<agora_proto::response::v1::response_service_server::ResponseServiceServer<
                agora_response::grpc::ResponseGrpc,
            >>()
            .await;
    }
    ready.store(true, Ordering::SeqCst);
    let mode = if settings.embedded {
        "embedded (SQLite, everything in one process)".to_string()
    } else {
        format!("targets {}", settings.targets.join(","))
    };
    tracing::info!(grpc = %grpc_addr, http = %settings.http_addr, ready_ms = started.elapsed().as_millis() as u64, "agora is ready: {mode}");
    println!("agora is ready ({mode}) in {} ms", started.elapsed().as_millis());
    let grpc_services: Vec<&str> = settings.targets.iter().map(String::as_str).filter(|t| *t != "gateway").collect();
    println!("  gRPC:    http://{grpc_addr}  ({} services, health, reflection)", grpc_services.join(", "));
    if settings.gateway.is_some() {
        println!(
            "  portal:  http://{}/   API: http://{}/api/v1 (reference at /api)",
            settings.http_addr, settings.http_addr
        );
    }
    println!("  health:  http://{}/healthz   metrics: http://{}/metrics", settings.http_addr, settings.http_addr);
    if let (Some(notification_settings), true) = (&settings.notification, settings.embedded)
        && notification_settings.config.smtp.is_none()
    {
        println!("  mail: messages are written to {}", notification_settings.mail_folder.display());
    }
    if let (Some(records_settings), true) = (&settings.records, settings.embedded)
        && let agora_records::config::SystemConfig::Archive { dir } = &records_settings.config.system
    {
        let dir = dir.clone().unwrap_or_else(|| records_settings.default_archive.clone());
        println!("  records: journalized hearings are filed under {}", dir.display());
    }
    if args.clock_offset_days != 0 {
        println!("  WARNING: the services' clock runs {} days ahead (AGORA_CLOCK_OFFSET_DAYS)", args.clock_offset_days);
        tracing::warn!(days = args.clock_offset_days, "the services' clock is shifted");
    }
    if settings.dev_login {
        println!("  development login is ON: demo users admin, karen, lars, erik, birgitte, carl, dorte");
        println!("    token for a demo user: agora token issue karen --data-dir {}", args.connect.data_dir.display());
        if !settings.embedded {
            println!(
                "  WARNING: the development login is on outside the embedded mode; anyone can log in as a demo user"
            );
        }
    }

    tokio::select! {
        _ = stop_requested => tracing::info!("stopping"),
        Some(result) = tasks.join_next() => {
            // A server ending on its own is an error worth stopping for.
            let _ = stop_tx.send(true);
            match result {
                Ok(Ok(())) => anyhow::bail!("a service stopped unexpectedly"),
                Ok(Err(e)) => return Err(e),
                Err(e) => anyhow::bail!("a service crashed: {e}"),
            }
        }
    }
    ready.store(false, Ordering::SeqCst);
    if with_hearing {
        health.set_not_serving::<HearingServiceServer<HearingGrpc>>().await;
    }
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("some work did not stop within 10 s");
    }
    Ok(())
}

/// Every service's integration events, for the relay (one per store, whichever services run
/// beside it) and the embedded mode's local feeds.
pub fn integration_mappers(store: &Store) -> Arc<dyn agora_eventstore::relay::IntegrationMapper> {
    Arc::new(agora_eventstore::relay::Mappers(vec![
        Arc::new(HearingIntegration::new(store.clone())),
        Arc::new(agora_identity::integration::IdentityIntegration::new(store.clone())),
        Arc::new(agora_response::integration::ResponseIntegration::new(store.clone())),
        Arc::new(agora_records::integration::RecordsIntegration),
    ]))
}

/// Where the response service finds the respondents' keys: the identity service's vault in
/// this process, or over gRPC.
fn personal_data_keys(
    identity: Option<&agora_identity::app::IdentityApp>,
    settings: &Settings,
) -> anyhow::Result<agora_response::personal::Keys> {
    match (identity, &settings.remote_vault) {
        (Some(app), _) => Ok(Arc::new(app.vault.clone())),
        (None, Some((url, secret))) => Ok(Arc::new(
            agora_identity::keyservice::RemoteKeys::new(url, secret)
                .map_err(|e| anyhow::anyhow!("AGORA_IDENTITY_URL: {e}"))?,
        )),
        (None, None) => anyhow::bail!("no vault for the response service (AGORA_IDENTITY_URL)"),
    }
}

/// Runs `work` every `period` until shutdown.
async fn every<F, Fut>(period: Duration, shutdown: impl std::future::Future<Output = ()>, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => work().await,
        }
    }
}

/// Reads the identity service's JWKS and makes `verifier` trust exactly its keys.
async fn refresh_jwks(verifier: &agora_auth::TokenVerifier, url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let jwks: serde_json::Value = client.get(url).send().await?.error_for_status()?.json().await?;
    verifier.replace_keys(&jwks)?;
    Ok(())
}

/// `GET /.well-known/jwks.json`: the keys every service verifies tokens with.
fn jwks_route(app: agora_identity::app::IdentityApp) -> axum::Router {
    use axum::http::{StatusCode, header};
    axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let app = app.clone();
            async move {
                match app.jwks().await {
                    Ok((jwks, _)) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/jwk-set+json"), (header::CACHE_CONTROL, "max-age=60")],
                        jwks.to_string(),
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the signing keys");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::CONTENT_TYPE, "text/plain"), (header::CACHE_CONTROL, "no-store")],
                            "the signing keys cannot be read now".to_string(),
                        )
                    }
                }
            }
        }),
    )
}

/// A background loop as a task whose end is not an error in itself.
async fn until_stopped(work: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    work.await;
    Ok(())
}

/// The identity service in this process, as the notification service looks people up.
struct IdentityDirectory(agora_identity::app::IdentityApp);

#[async_trait::async_trait]
impl agora_notification::recipients::Directory for IdentityDirectory {
    async fn contact(
        &self,
        user_id: &str,
    ) -> Result<Option<agora_notification::recipients::Contact>, agora_vault::VaultError> {
        let Ok(id) = uuid::Uuid::parse_str(user_id) else { return Ok(None) };
        let contact = self.0.contact(id).await.map_err(|e| agora_vault::VaultError::Store(e.to_string()))?;
        Ok(contact.map(notification_contact))
    }

    /// Everyone at once, as the identity service answers `GetContacts` (ids that are no user id
    /// are nobody).
    async fn contacts(
        &self,
        user_ids: &[String],
    ) -> Result<std::collections::HashMap<String, agora_notification::recipients::Contact>, agora_vault::VaultError>
    {
        let asked = agora_notification::recipients::user_ids_among(user_ids);
        let ids: Vec<uuid::Uuid> = asked.values().copied().collect();
        let found = self.0.contacts(&ids).await.map_err(|e| agora_vault::VaultError::Store(e.to_string()))?;
        Ok(asked
            .into_iter()
            .filter_map(|(asked, id)| {
                Some((asked.to_string(), notification_contact(found.get(&id).cloned().flatten()?)))
            })
            .collect())
    }
}

/// The identity service's contact as the notification service takes it.
fn notification_contact(c: agora_identity::app::Contact) -> agora_notification::recipients::Contact {
    agora_notification::recipients::Contact {
        name: c.name,
        email: c.email,
        language: agora_notification::templates::Language::parse(&c.language).unwrap_or_default(),
        digital_post: c.digital_post.as_deref().and_then(agora_notification::recipients::digital_post_address),
    }
}

/// The gateway's routes, reaching each service where it runs (`here` when in this process).
fn gateway_router(
    args: &RunArgs,
    settings: &Settings,
    gateway_settings: &crate::config::GatewaySettings,
    here: &str,
) -> anyhow::Result<axum::Router> {
    let at = |url: &Option<String>| url.clone().unwrap_or_else(|| here.to_string());
    let endpoints = agora_gateway::Endpoints {
        hearing: at(&gateway_settings.hearing_url),
        response: at(&gateway_settings.response_url),
        identity: at(&gateway_settings.identity_url),
        records: at(&gateway_settings.records_url),
        notification: at(&gateway_settings.notification_url),
    };
    // The feed comes from the hearing service's store (the response service's too when they
    // share one, as in the embedded mode).
    let services = agora_gateway::Services::connect_lazy(&endpoints, settings.service_secret.as_deref())?;
    let gateway = agora_gateway::Gateway::new(
        services,
        agora_gateway::SessionKey::derived(&settings.pseudonym_key),
        agora_gateway::Settings { max_body_bytes: args.max_body_mb as usize * 1024 * 1024, ..Default::default() },
    )
    .with_limits(agora_gateway::limits::Limits {
        per_client: agora_gateway::limits::Rate::per_second(args.rate_limit_per_client)
            .map(agora_gateway::limits::Limiter::new),
        per_user: agora_gateway::limits::Rate::per_second(args.rate_limit_per_user)
            .map(agora_gateway::limits::Limiter::new),
        trust_forwarded_for: args.trust_forwarded_for,
    });
    Ok(gateway.router())
}

/// A process that is only the gateway: no store, no bus, only the services' addresses. Ready
/// as soon as it listens; what it cannot reach it reports per request (503 problems).
async fn run_gateway(
    args: &RunArgs,
    settings: &Settings,
    stop_requested: impl std::future::Future<Output = ()>,
    started: Instant,
) -> anyhow::Result<()> {
    let Some(gateway_settings) = &settings.gateway else { anyhow::bail!("the gateway is not among the targets") };
    let routes = gateway_router(args, settings, gateway_settings, "http://127.0.0.1:0")?;
    let http = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("AGORA_HTTP_ADDR: cannot listen on {}", settings.http_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let server = agora_telemetry::metrics::serve_with(http, ready.clone(), routes, shutdown_future(&stop_rx));
    tracing::info!(http = %settings.http_addr, ready_ms = started.elapsed().as_millis() as u64, "agora is ready: targets gateway");
    println!("agora is ready (targets gateway) in {} ms", started.elapsed().as_millis());
    println!(
        "  portal:  http://{}/   API: http://{}/api/v1 (reference at /api)",
        settings.http_addr, settings.http_addr
    );
    println!("  health:  http://{}/healthz   metrics: http://{}/metrics", settings.http_addr, settings.http_addr);
    tokio::pin!(server);
    tokio::select! {
        _ = stop_requested => tracing::info!("stopping"),
        result = &mut server => {
            result?;
            anyhow::bail!("the gateway stopped unexpectedly");
        }
    }
    ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(10), server).await.is_err() {
        tracing::warn!("some requests did not finish within 10 s");
    }
    Ok(())
}
