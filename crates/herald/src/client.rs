//! Client commands: talk to a running server over its HTTP API.

use clap::Subcommand;

use crate::Connection;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// List topics.
    List,
}

pub async fn run_topic(_conn: Connection, _cmd: TopicCommand) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
