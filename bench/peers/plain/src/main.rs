//! `herald-peer-plain [--port N]`: runs the naive reference server on 127.0.0.1 (see the library).

use clap::Parser;

/// The deliberately naive reference server for `herald bench --protocol plain`.
#[derive(Parser, Debug)]
#[command(name = "herald-peer-plain", version, about)]
struct Cli {
    /// TCP port to listen on (127.0.0.1 only).
    #[arg(long, env = "PORT", default_value_t = 4900)]
    port: u16,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port)).await?;
    eprintln!("herald-peer-plain listening on {}", listener.local_addr()?);
    tokio::select! {
        served = herald_peer_plain::serve(listener) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
