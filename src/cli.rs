//! Command line: `entragate serve | dev`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Reverse-proxy auth gateway for Microsoft Entra ID access tokens.
#[derive(Debug, Parser)]
#[command(name = "entragate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// One-command demo: embedded Entra-shaped issuer, echo upstream, and the gateway between.
    Dev {
        /// Gateway listener (another free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener (/healthz, /readyz, /metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Run the demo requests and exit (status 0 when all answers are as expected).
        #[arg(long)]
        once: bool,
    },
}
