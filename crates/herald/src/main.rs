//! The `herald` binary: command line, configuration loading, logging, and wiring of the server.

mod config_check;
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
    /// Check the configuration, or print the effective one.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the configuration file, the environment and the flags; name every bad value.
    Check(ServeArgs),
    /// Print the effective configuration (as TOML) with the source of every value.
    Print(ServeArgs),
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

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The message and each cause on its own line; no backtrace, which names no remedy.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Config(ConfigCommand::Check(args)) => config_check(args),
        Command::Config(ConfigCommand::Print(args)) => config_print(args),
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

impl ServeArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            data_dir: self.common.data_dir.clone(),
            port: self.port,
            bind: self.bind,
            production: self.production.then_some(true),
            test_echo_route: self.test_echo_route.then_some(true),
            database_url: self.database_url.clone(),
        }
    }
}

fn config_check(args: ServeArgs) -> Result<()> {
    let checked = config_check::check(args.common.config.as_deref(), &args.overrides());
    for warning in &checked.warnings {
        println!("warning: {warning}");
    }
    if checked.problems.is_empty() {
        println!("the configuration is valid");
        return Ok(());
    }
    bail!(
        "the configuration has {} problem(s):\n{}\nEvery setting is described in docs/configuration.md.",
        checked.problems.len(),
        checked.problem_lines()
    )
}

fn config_print(args: ServeArgs) -> Result<()> {
    let checked = config_check::check(args.common.config.as_deref(), &args.overrides());
    if checked.settings.is_none() {
        bail!(
            "the configuration cannot be read:\n{}",
            checked.problem_lines()
        );
    }
    print!("{}", checked.render());
    for problem in &checked.problems {
        eprintln!("problem: {problem}");
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let overrides = args.overrides();
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
        sse_stall_timeout: std::time::Duration::from_secs(30),
        cors_origins: settings.cors_origins.clone(),
        allowed_origins: settings.allowed_origins.clone(),
        header_read_timeout: std::time::Duration::from_secs(30),
        body_read_timeout: std::time::Duration::from_secs(30),
        postgres: settings.postgres_config(),
        private_only: settings.private_only,
        metrics_token: settings.metrics_token.clone().filter(|t| !t.is_empty()),
        trusted_proxies: settings.trusted_proxies()?,
        token_rules: settings.token_rules()?,
        jwks_url: settings.jwt_jwks_url.clone().filter(|u| !u.is_empty()),
        jwks_refresh: std::time::Duration::from_secs(settings.jwt_jwks_refresh_secs.max(10)),
        node_id: settings.node_id.clone(),
        policy: std::sync::Arc::new(
            herald_core::policy::Policy::compile(&settings.policies).map_err(|errors| {
                let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("{}", texts.join("; "))
            })?,
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = match herald_server::start(config, Some(prometheus)).await {
            Ok(running) => running,
            Err(herald_server::StartError::Bind { addr, source }) => {
                bail!("{}", bind_failure(addr, &source))
            }
            Err(e) => return Err(e.into()),
        };
        let url = format!("http://{}", running.addr);
        let ws = url.replacen("http", "ws", 1);
        let mode = if production {
            "production"
        } else {
            "development"
        };
        println!(
            "Herald {} is running at {url} ({mode} mode)",
            env!("CARGO_PKG_VERSION")
        );
        println!("  demo:      {url}/");
        println!("  admin:     {url}/admin");
        println!("  websocket: {ws}/socket/websocket (supabase-js: createClient('{url}', token))");
        println!("  sse:       {url}/sse?topic=<topic>");
        println!("  publish:   POST {url}/api/broadcast");
        if !production {
            let auth = Authenticator::new(secret.value.as_bytes());
            let year = 365 * 24 * 3600;
            if secret.generated {
                println!("  secret:    generated and kept in {}", secret.source);
            }
            println!(
                "  anon token:         {}",
                auth.mint(roles::ANON, None, year)?
            );
            println!(
                "  service_role token: {}",
                auth.mint(roles::SERVICE_ROLE, None, year)?
            );
        }
        info!(%url, production, "herald started");
        wait_for_signal().await;
        info!("signal received; shutting down");
        running.shutdown().await;
        Ok(())
    })
}

/// What to do when the listening address cannot be bound.
fn bind_failure(addr: std::net::SocketAddr, error: &std::io::Error) -> String {
    let remedy = match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process already listens on port {}: stop it, or choose another port with --port or HERALD_PORT",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: set --bind or HERALD_BIND to one of its addresses (0.0.0.0 for all)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges: choose a port above 1023 with --port or HERALD_PORT (and put a proxy in front, see docs/operations.md), or grant CAP_NET_BIND_SERVICE".to_owned(),
        _ => "check --bind and --port (HERALD_BIND, HERALD_PORT)".to_owned(),
    };
    format!("cannot listen on {addr}: {error}\n{remedy}")
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

/// Herald's own lines at `info`; the embedded store's and the replication library's only when they
/// warn.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn,pg_walstream=error";

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
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
