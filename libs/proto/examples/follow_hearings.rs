//! Follows Agora's hearing events on NATS JetStream from a chosen position, the way another
//! system (a data warehouse, an ESDH integration) would, and prints each hearing's state.
//!
//! ```sh
//! cargo run -p agora-proto --example follow_hearings -- --from-sequence 1
//! cargo run -p agora-proto --example follow_hearings -- --since 2026-11-01T00:00:00Z --nats nats://127.0.0.1:4222
//! cargo run -p agora-proto --example follow_hearings -- --new --prefix agora
//! ```
//!
//! The subjects and messages are documented in docs/asyncapi.yaml. An ordered consumer is
//! enough to follow along; a system that must not miss an event across its own restarts keeps
//! the last stream sequence it handled and starts from the one after it (or uses a durable
//! consumer with explicit acknowledgements).

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;

/// Where to start reading.
enum From {
    Sequence(u64),
    Time(String),
    New,
    All,
}

struct Options {
    nats: String,
    prefix: String,
    from: From,
    limit: Option<usize>,
}

fn options() -> Result<Options, String> {
    let mut options =
        Options { nats: "nats://127.0.0.1:4222".into(), prefix: "agora".into(), from: From::All, limit: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--nats" => options.nats = value("--nats")?,
            "--prefix" => options.prefix = value("--prefix")?,
            "--from-sequence" => {
                let text = value("--from-sequence")?;
                options.from =
                    From::Sequence(text.parse().map_err(|_| format!("--from-sequence: '{text}' is not a number"))?);
            }
            "--since" => options.from = From::Time(value("--since")?),
            "--new" => options.from = From::New,
            "--limit" => {
                let text = value("--limit")?;
                options.limit = Some(text.parse().map_err(|_| format!("--limit: '{text}' is not a number"))?);
            }
            other => {
                return Err(format!(
                    "unknown option {other} (--nats, --prefix, --from-sequence, --since, --new, --limit)"
                ));
            }
        }
    }
    Ok(options)
}

/// The stream a deployment's prefix publishes to (see docs/asyncapi.yaml).
fn stream_name(prefix: &str) -> String {
    prefix.to_uppercase().chars().map(|c| if matches!(c, '.' | '*' | '>' | ' ') { '_' } else { c }).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let deliver_policy = match &options.from {
        From::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence: *start_sequence },
        From::Time(at) => {
            let start_time = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("--since: '{at}' is not an RFC 3339 time: {e}"))?;
            DeliverPolicy::ByStartTime { start_time }
        }
        From::New => DeliverPolicy::New,
        From::All => DeliverPolicy::All,
    };
    let client = async_nats::connect(&options.nats).await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(stream_name(&options.prefix)).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.hearing.v1.>", options.prefix),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message?;
        let header = |name: &str| {
            message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string()).unwrap_or_default()
        };
        let event_type = header("ce-type");
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        match agora_proto::hearing_state(&event_type, &message.payload) {
            Ok(state) => println!(
                "#{sequence} {} {event_type}: {} \"{}\" is {} ({} → {})",
                header("ce-time"),
                state.hearing_id,
                state.title,
                agora_proto::hearing_status_name(state.status),
                state.start_date,
                state.deadline,
            ),
            Err(reason) => eprintln!("#{sequence} skipped: {reason}"),
        }
        seen += 1;
        if options.limit.is_some_and(|limit| seen >= limit) {
            break;
        }
    }
    Ok(())
}
