//! Command line: `entragate serve | dev | init | check | explain | import-apim | revoke |
//! unrevoke | revoked`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::LOG_FORMAT_ENV;

/// Reverse-proxy auth gateway for Microsoft Entra ID access tokens.
#[derive(Debug, Parser)]
#[command(name = "entragate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. SIGHUP reloads the config; SIGTERM/SIGINT drain and stop.
    Serve {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format; overrides server.log_format.
        #[arg(long, env = LOG_FORMAT_ENV, value_enum)]
        log_format: Option<LogFormatArg>,
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
        /// A config file whose [dev] section names the issuer's API, users and clients
        /// (the rest of the file is not used) [default: built-in dev users and clients]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write a gateway config, an `az` script that creates or updates the API's Entra app
    /// registration, and the registration as a Graph application object, all agreeing.
    /// Never overwrites a file without --force. Exit 0 written, 2 bad input.
    Init {
        /// The API's public URL, scheme and host only: https://cdr.example.org (or api://…).
        #[arg(long)]
        url: String,
        /// Directory (tenant) ID, or "organizations" (or "common") for a multi-tenant API
        /// [default: the tenant `az` is signed in to, filled in by entra-app.sh]
        #[arg(long)]
        tenant: Option<String>,
        /// Client applications to pre-authorize: power-query, power-bi, power-platform,
        /// posit-connect (comma-separated).
        #[arg(long, default_value = DEFAULT_CLIENTS)]
        clients: String,
        /// Directory to write entragate.toml, entra-app.sh and entra-app.json into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Overwrite the files if they exist.
        #[arg(long)]
        force: bool,
    },
    /// Check the config, fetch the issuers' metadata and keys, and print the Entra
    /// app-registration checklist; with --app, compare an application object with the config
    /// instead, offline. Exit 0 all well, 1 a check failed, 2 bad config.
    Check {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// An application object to compare with the config (`az ad app show --id …`
        /// output, Graph JSON, the portal's manifest, or entra-app.json); nothing is fetched.
        #[arg(long)]
        app: Option<PathBuf>,
        /// Output for people (text) or scripts (json).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Decode an access token and say whether this config accepts it, and every reason why
    /// not, in Entra terms. The signature is never printed. Exit 0 accepted, 1 refused.
    Explain {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Do not fetch keys: judge the claims only, leave the signature unverified.
        #[arg(long)]
        offline: bool,
        /// Request method to evaluate the [[routes]] rules for.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path to evaluate the [[routes]] rules for.
        #[arg(long, default_value = "/")]
        path: String,
        /// Output for people (text) or scripts (json).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The access token, with or without "Bearer "; "-" reads it from standard input.
        token: String,
    },
    /// Convert an Azure API Management <validate-jwt> or <validate-azure-ad-token> policy
    /// into entragate TOML on standard output.
    ImportApim {
        /// The policy XML file, or an ARM template (JSON) exported from API Management that
        /// holds the API and its policy ("-" reads standard input).
        policy: PathBuf,
    },
    /// Revoke an identity on every replica: its tokens are refused (401 invalid_token,
    /// reason revoked) from the next request on, until the entry expires. Writes the Redis
    /// set when limits_store.url is set, else the revocation.file.
    Revoke {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        subject: Subject,
        /// Only tokens issued (iat) before this time: RFC 3339 (2026-12-03T16:00:00Z),
        /// Unix seconds, or "now".
        #[arg(long)]
        issued_before: Option<String>,
        /// When the entry expires: RFC 3339, Unix seconds, or a duration from now ("8h")
        /// [default: now + entra.max_token_lifetime, past which no token issued now lives].
        #[arg(long)]
        until: Option<String>,
    },
    /// Remove every revocation entry of an identity.
    Unrevoke {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        subject: Subject,
    },
    /// List the revocation entries in force.
    Revoked {
        /// Config file [default: $ENTRAGATE_CONFIG, then ./entragate.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Exactly one identity to revoke.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Subject {
    /// A user's (or service principal's) object ID.
    #[arg(long)]
    pub oid: Option<String>,
    /// A client application (azp / appid).
    #[arg(long)]
    pub client: Option<String>,
    /// A tenant (tid).
    #[arg(long)]
    pub tenant: Option<String>,
    /// One token (jti).
    #[arg(long)]
    pub jti: Option<String>,
}

/// What `init --clients` defaults to: Power BI Desktop and the Power BI service.
pub const DEFAULT_CLIENTS: &str = "power-query,power-bi";

/// Output format of `check` and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}
