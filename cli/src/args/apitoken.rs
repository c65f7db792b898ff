//! `ferrofab token ...`: API tokens for the HTTP/JSON API and dashboard.

use clap::Subcommand;

use super::parse::parse_duration;

/// `ferrofab token ...` (node bootstrap tokens are `ferrofab node token`).
#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Mint a bearer token for the HTTP API and the dashboard; it is shown
    /// once, the controller keeps only a hash.
    Create {
        /// Who the token speaks for: `admin` or `tenant:NAME`.
        #[arg(long)]
        identity: String,
        /// How long it stays valid (at most 366d).
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// Free text shown by `token list`, e.g. who holds it.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The tokens' ids, identities and expiries (never the tokens).
    List,
    /// Revoke a token by its id: refused from the next request on.
    Revoke {
        /// The id `token create` and `token list` show.
        id: String,
    },
}
