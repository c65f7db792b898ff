//! `discover`, `connect` and `disconnect`. Filled in by the initiator work.

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {}
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {}
#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {}

pub fn discover(_args: DiscoverArgs) -> anyhow::Result<()> {
    anyhow::bail!("discover is not implemented yet")
}
pub fn connect(_args: ConnectArgs) -> anyhow::Result<()> {
    anyhow::bail!("connect is not implemented yet")
}
pub fn disconnect(_args: DisconnectArgs) -> anyhow::Result<()> {
    anyhow::bail!("disconnect is not implemented yet")
}
