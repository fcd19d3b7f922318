//! The `herald` binary: command line, configuration loading, logging, and wiring of the server.

mod settings;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use herald_core::Authenticator;
use herald_core::auth::roles;
use herald_server::ServerConfig;
use settings::{CliOverrides, Settings};
use tracing::info;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Herald: a real-time server for web apps.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Mint a token signed with the configured secret.
    Token(TokenArgs),
    /// Generate load against a running server and report what it measured.
    Bench(herald_bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
struct CommonArgs {
    /// A TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where Herald keeps its state (development secret, history).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// TCP port to listen on.
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind.
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// Refuse to start without a configured secret.
    #[arg(long)]
    production: bool,
    /// Serve `/_test/echo` for the WebSocket conformance suite.
    #[arg(long)]
    test_echo_route: bool,
    /// PostgreSQL URL for Postgres Changes (also `DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The role claim: anon, authenticated, service_role, or any other.
    #[arg(long)]
    role: String,
    /// The subject (user id).
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    exp: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(herald_bench::run(args))
        }
    }
}

fn token(args: TokenArgs) -> Result<()> {
    let overrides = CliOverrides {
        data_dir: args.common.data_dir,
        ..CliOverrides::default()
    };
    let settings = Settings::load(args.common.config.as_deref(), &overrides)?;
    let secret = settings.resolve_secret()?;
    let auth = Authenticator::new(secret.value.as_bytes());
    println!("{}", auth.mint(&args.role, args.sub.as_deref(), args.exp)?);
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let overrides = CliOverrides {
        data_dir: args.common.data_dir,
        port: args.port,
        bind: args.bind,
        production: args.production.then_some(true),
        test_echo_route: args.test_echo_route.then_some(true),
        database_url: args.database_url,
    };
    let settings = Settings::load(args.common.config.as_deref(), &overrides)?;
    init_logging(&settings.log_format);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let secret = settings.resolve_secret()?;
    let production = settings.is_production();
    if production && secret.generated {
        bail!(
            "production mode needs a configured secret: set HERALD_JWT_SECRET (or jwt_secret in the config file)"
        );
    }
    let config = ServerConfig {
        addr: std::net::SocketAddr::new(settings.bind, settings.port),
        jwt_secret: secret.value.clone(),
        limits: settings.limits.clone(),
        shutdown_grace: std::time::Duration::from_secs(settings.shutdown_grace_secs),
        test_echo_route: settings.test_echo_route,
        production,
        history: settings.history_config()?,
        sse_cookie: settings.sse_cookie.clone(),
        sse_keepalive: std::time::Duration::from_secs(settings.sse_keepalive_secs.max(1)),
        cors_origins: settings.cors_origins.clone(),
        header_read_timeout: std::time::Duration::from_secs(30),
        postgres: settings.postgres_config(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = herald_server::start(config, Some(prometheus)).await?;
        let url = format!("http://{}", running.addr);
        if !production {
            let auth = Authenticator::new(secret.value.as_bytes());
            let year = 365 * 24 * 3600;
            println!("Herald is running in development mode at {url}");
            if secret.generated {
                println!("  secret: generated and kept in {}", secret.source);
            }
            println!(
                "  anon token:         {}",
                auth.mint(roles::ANON, None, year)?
            );
            println!(
                "  service_role token: {}",
                auth.mint(roles::SERVICE_ROLE, None, year)?
            );
            println!(
                "  demo: {url}/   websocket: {}/socket/websocket",
                url.replacen("http", "ws", 1)
            );
        }
        info!(%url, production, "herald started");
        wait_for_signal().await;
        info!("signal received; shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,pg_walstream=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
