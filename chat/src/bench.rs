//! Load generator (placeholder).

/// Flags of `reddit-chat bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
