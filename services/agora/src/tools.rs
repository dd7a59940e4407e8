//! The operator's tools: migrations, audit verification, republishing, rebuilds, tokens.

use std::path::Path;
use std::sync::Arc;

use agora_eventstore::consumer::ProjectionRunner;
use agora_eventstore::jetstream::{Bus, BusConfig};
use agora_eventstore::relay::Relay;
use agora_hearing::projections::{self, HearingListProjection};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{ConnectArgs, embedded_identity_settings};

pub async fn migrate(connect: ConnectArgs) -> anyhow::Result<()> {
    let store = connect.store().await?;
    // Every service's tables, so that a migration job before an upgrade covers them all.
    projections::migrate(&store).await.context("cannot create the hearing tables")?;
    agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
    agora_response::projections::migrate(&store).await.context("cannot create the response tables")?;
    agora_records::store::migrate(&store).await.context("cannot create the records tables")?;
    agora_notification::migrate(&store).await.context("cannot create the notification tables")?;
    println!("schema is up to date");
    Ok(())
}

/// Wraps every key again under the configured master key (the end of a rotation).
pub async fn rewrap_keys(connect: ConnectArgs, master: crate::config::MasterKeyArgs) -> anyhow::Result<()> {
    if master.master_key.is_none() {
        anyhow::bail!("AGORA_MASTER_KEY is required: the new master key, to wrap every key under");
    }
    let master =
        master.master(false, &connect.data_dir)?.ok_or_else(|| anyhow::anyhow!("AGORA_MASTER_KEY is required"))?;
    let store = connect.store().await?;
    agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
    let done = agora_identity::vault::rewrap(&store, &master)
        .await
        .context("cannot rewrap: is every previous master key in AGORA_PREVIOUS_MASTER_KEYS?")?;
    println!(
        "rewrapped {} person keys and {} signing keys under master key '{}'{}",
        done.person_keys,
        done.signing_keys,
        master.kid(),
        if done.skipped > 0 {
            format!(" ({} were erased meanwhile and stay erased)", done.skipped)
        } else {
            String::new()
        }
    );
    let previous = master.previous_kids();
    if !previous.is_empty() {
        println!(
            "nothing is wrapped under {} any more: remove AGORA_PREVIOUS_MASTER_KEYS from the services and destroy those keys",
            previous.iter().map(|kid| format!("'{kid}'")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Exit code 0 when the process at `url` (or at `http_addr`'s /readyz) answers 200, 1 otherwise.
pub async fn health(url: Option<String>, http_addr: &str) -> anyhow::Result<u8> {
    let url = match url {
        Some(url) => url,
        None => {
            let addr: std::net::SocketAddr = http_addr
                .parse()
                .map_err(|e| anyhow::anyhow!("AGORA_HTTP_ADDR '{http_addr}' is not a host:port address: {e}"))?;
            // A process listening on every interface is asked on loopback.
            let host = match addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
                ip if ip.is_unspecified() => "[::1]".to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            format!("http://{host}:{}/readyz", addr.port())
        }
    };
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build()?;
    match client.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => {
            println!("ready ({url})");
            Ok(0)
        }
        Ok(answer) => {
            println!("not ready: {url} answered {}", answer.status());
            Ok(1)
        }
        Err(e) => {
            println!("not ready: cannot reach {url}: {e}");
            Ok(1)
        }
    }
}

/// Exit code 0 when every chain is intact, 1 when tampering was found.
pub async fn audit_verify(connect: ConnectArgs) -> anyhow::Result<u8> {
    let store = connect.store().await?;
    let report = agora_eventstore::audit::verify(&store).await.context("cannot read the event log")?;
    if report.intact() {
        println!("audit log intact: {} streams, {} events", report.streams, report.events);
        return Ok(0);
    }
    for finding in &report.findings {
        println!("TAMPERED: {finding}");
    }
    println!(
        "audit log NOT intact: {} of {} streams have problems ({} events checked)",
        report.findings.len(),
        report.streams,
        report.events
    );
    Ok(1)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, {eta} left)") {
        bar.set_style(style);
    }
    bar
}

pub async fn republish(connect: ConnectArgs, nats_url: &str, prefix: &str, from: i64) -> anyhow::Result<()> {
    if from < 1 {
        anyhow::bail!("--from must be a position of 1 or more (got {from})");
    }
    let store = connect.store().await?;
    let bus = Bus::connect_existing(BusConfig::new(nats_url, prefix)).await?;
    let relay = Relay::new(store.clone(), bus, crate::run::integration_mappers(&store));
    let (count, last) = store.log_extent().await?;
    let bar = progress_bar(count.max(0) as u64);
    let sent = relay.republish(from, |n| bar.set_position(n as u64)).await?;
    bar.finish_and_clear();
    println!("re-sent {sent} events from position {from} (last position {last}); JetStream drops those it still holds");
    Ok(())
}

pub async fn rebuild(connect: ConnectArgs) -> anyhow::Result<()> {
    let store = connect.store().await?;
    projections::migrate(&store).await?;
    agora_response::projections::migrate(&store).await.context("cannot create the response tables")?;
    agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
    // Every read model kept from the log; the services' own tables (queues, counters, keys)
    // are not read models and are left alone.
    let runner = ProjectionRunner::new(
        store.clone(),
        vec![
            Arc::new(HearingListProjection),
            Arc::new(agora_response::projections::ResponseListProjection),
            Arc::new(agora_identity::app::UserListProjection),
        ],
    );
    for projection in runner.projections().to_vec() {
        let bar = progress_bar(0);
        let started = std::time::Instant::now();
        let applied = runner
            .rebuild(projection.as_ref(), |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "rebuilt {}: {applied} events in {seconds:.2} s ({:.0} events/s)",
            projection.name(),
            applied as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

/// A development token for a demo user, from the identity service of the embedded data dir
/// (the same keys as the portal running there). Valid 8 hours, for trying the API by hand.
pub async fn issue_token(data_dir: &Path, handle: &str, clock_offset_days: i64) -> anyhow::Result<()> {
    let connect = ConnectArgs { data_dir: data_dir.to_path_buf(), database_url: None, database_pool: 32 };
    let store = connect.store().await?;
    store.migrate().await.context("cannot create the event store tables")?;
    agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
    let settings = embedded_identity_settings(data_dir, chrono::Duration::hours(8))?;
    let clock = crate::config::shifted_clock(clock_offset_days)?;
    let app = agora_identity::app::IdentityApp::new(store, settings, Vec::new(), clock).await?;
    let session = app.dev_login(handle).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", session.access_token);
    eprintln!(
        "token for {} ({}), valid 8 hours; use as 'authorization: Bearer <token>'",
        session.user.name, session.user.user_id
    );
    Ok(())
}

/// `agora gdpr export`: the person's data from each service, and the actions they took.
pub async fn gdpr_export(args: crate::config::GdprArgs) -> anyhow::Result<()> {
    let store = args.connect.store().await?;
    store.migrate().await.context("cannot create the event store tables")?;
    agora_identity::store::migrate(&store).await.context("cannot create the identity tables")?;
    agora_response::projections::migrate(&store).await.context("cannot create the response tables")?;
    let clock: agora_identity::app::Clock = Arc::new(chrono::Utc::now);
    let identity =
        agora_identity::app::IdentityApp::new(store.clone(), args.identity_settings()?, Vec::new(), clock.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The operator acts as an administrator through this tool.
    let operator = agora_auth::Principal::new(uuid::Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::Administrator);
    let profile = match identity.personal_data(&operator, args.user).await {
        Ok(profile) => profile,
        Err(agora_identity::app::IdentityAppError::Domain(agora_identity::domain::IdentityError::NotFound)) => {
            serde_json::Value::Null
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    // The read models first catch up, as the running services would.
    let runner = ProjectionRunner::new(
        store.clone(),
        vec![
            Arc::new(agora_response::projections::ResponseListProjection),
            Arc::new(agora_identity::app::UserListProjection),
        ],
    );
    runner.catch_up().await.context("cannot bring the read models up to date")?;
    let files = agora_response::files::Attachments { store: args.files()?.open()?, scanner: None };
    let (intake, _worker) = agora_response::intake::Intake::start(
        store.clone(),
        files,
        Arc::new(identity.vault.clone()),
        clock.clone(),
        agora_response::intake::IntakeConfig::default(),
    );
    let responses = agora_response::app::ResponseApp::new(store.clone(), intake, clock.clone());
    let author = format!("user:{}", args.user);
    let response_data = responses.personal_data(&author).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // What they did, as the audit log records it.
    let mut actions = Vec::new();
    let mut after = agora_eventstore::LogPosition::START;
    loop {
        let page = store.read_log(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.log;
        for event in &page {
            if event.metadata_str(agora_eventstore::metadata::keys::ACTOR).as_deref() == Some(author.as_str()) {
                actions.push(serde_json::json!({
                    "event": event.event_type,
                    "about": format!("{}/{}", event.aggregate_type, event.aggregate_id),
                    "at": event.recorded_at,
                }));
            }
        }
    }
    let export = serde_json::json!({
        "user_id": args.user,
        "generated_at": chrono::Utc::now(),
        "identity": profile,
        "responses": response_data["responses"],
        "seen_by": response_data["seen_by"],
        "actions": actions,
    });
    println!("{}", serde_json::to_string_pretty(&export)?);
    Ok(())
}
