//! Runs the benchmark without the `herald` binary: `cargo run -p herald-bench --example bench -- bench
//! idle --connections 200` (same command shape as `herald bench ...`).

use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Generate load against a running server and report what it measured.
    Bench(herald_bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Bench(args) = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(herald_bench::run(args))
}
