//! `herald bench`: benchmarks that write their figures to BENCHMARKS.md.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Durable append throughput and latency of the embedded log.
    Produce,
}

pub async fn run(_cmd: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
