//! `agora`: the one binary. `agora run` runs every service in one process on the embedded
//! default (SQLite, no servers); `agora run --target hearing` runs chosen services against
//! PostgreSQL and NATS JetStream. It also carries the operator's tools.

mod bench;
mod config;
mod demo;
mod feed;
mod run;
mod tools;

use clap::{Parser, Subcommand};

// glibc's allocator was a tenth of the intake's CPU under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::config::{ConnectArgs, RunArgs};

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora: the digital hearing portal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Run services: all of them on the embedded default, or the given targets distributed.
    Run(RunArgs),
    /// Create or update the database schema of the event store and the read models.
    Migrate(ConnectArgs),
    /// Check the audit log's hash chains.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Re-send the event history to JetStream from a global position.
    Republish {
        #[arg(long, default_value_t = 1)]
        from: i64,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long, env = "AGORA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, env = "AGORA_NATS_PREFIX", default_value = "agora")]
        nats_prefix: String,
    },
    /// Read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// The GDPR tools: a person's data across the services.
    Gdpr {
        #[command(subcommand)]
        command: GdprCommand,
    },
    /// Development tokens for the demo users (embedded mode only).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The master key: the last step of its rotation.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask a running agora process whether it is ready (its /readyz): exit 0 when it is, 1 when
    /// not. The container image has no shell or curl; its health checks run this.
    Health {
        /// The URL to ask; by default /readyz at AGORA_HTTP_ADDR.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "AGORA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: String,
    },
    /// Benchmarks; figures go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk every stream; exit 0 when intact, 1 naming the stream and position otherwise.
    Verify(ConnectArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Wrap every person key and token signing key again under AGORA_MASTER_KEY, opening them
    /// with AGORA_PREVIOUS_MASTER_KEYS; afterwards the previous keys can be destroyed. Safe to
    /// run again, and beside running services (docs/operations.md, "Rotating keys").
    Rewrap {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        master: config::MasterKeyArgs,
    },
}

#[derive(Subcommand)]
enum ProjectionCommand {
    /// Empty the read models and apply the whole log again.
    Rebuild(ConnectArgs),
}

#[derive(Subcommand)]
enum GdprCommand {
    /// Everything Agora holds about one person, across the services, as JSON on standard output
    /// (the right of access). Run by an operator with access to the database and the keys.
    Export(config::GdprArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an access token for a demo user (admin, karen, lars, erik, birgitte, carl, dorte).
    Issue {
        user: String,
        #[arg(long, env = "AGORA_DATA_DIR", default_value = "./agora-data")]
        data_dir: std::path::PathBuf,
        /// Issues it as if this many days from now (the services' shifted clock, for tests:
        /// a negative offset gives a token that has already expired).
        #[arg(long, env = "AGORA_CLOCK_OFFSET_DAYS", default_value_t = 0, hide = true, allow_negative_numbers = true)]
        clock_offset_days: i64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await.map(|_| 0),
            Command::Migrate(connect) => tools::migrate(connect).await.map(|_| 0),
            Command::Audit { command: AuditCommand::Verify(connect) } => tools::audit_verify(connect).await,
            Command::Republish { from, connect, nats_url, nats_prefix } => {
                tools::republish(connect, &nats_url, &nats_prefix, from).await.map(|_| 0)
            }
            Command::Projections { command: ProjectionCommand::Rebuild(connect) } => {
                tools::rebuild(connect).await.map(|_| 0)
            }
            Command::Gdpr { command: GdprCommand::Export(args) } => tools::gdpr_export(args).await.map(|_| 0),
            Command::Token { command: TokenCommand::Issue { user, data_dir, clock_offset_days } } => {
                tools::issue_token(&data_dir, &user, clock_offset_days).await.map(|_| 0)
            }
            Command::Keys { command: KeysCommand::Rewrap { connect, master } } => {
                tools::rewrap_keys(connect, master).await.map(|_| 0)
            }
            Command::Health { url, http_addr } => tools::health(url, &http_addr).await,
            Command::Bench { command } => bench::run(command).await.map(|_| 0),
        }
    });
    match result {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
