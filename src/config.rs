//! Configuration: a TOML file layered with `ENTRAGATE_<TABLE>__<KEY>` environment variables.
//!
//! Loading is pure: it takes the file's text and a list of variables, never the process
//! environment, so tests can feed it anything. Every key is read on its own, so one bad value
//! does not hide the next: all problems come back together, each named by its key (and by the
//! environment variable when that is where the value came from). The result is a set of runtime
//! types with every default written out; nothing downstream re-parses strings.

mod apis;
mod cloud;
mod dev;
mod limits;
mod read;
mod routes;
mod telemetry;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use apis::{API_KEYS, Api, DEFAULT_API, IpFilter};
pub use cloud::Cloud;
pub use dev::{
    DEV_API_CLIENT_ID, DEV_APP_CLIENT_ID, DEV_APP_SECRET, DEV_CLIENT_KEYS, DEV_TENANT,
    DEV_USER_KEYS, Dev, DevClient, DevUser, POWER_QUERY_CLIENT_ID, Secret, guid_from,
};
pub use limits::{
    LIMIT_KEYS, LimitKey, LimitKind, LimitRule, LimitsStore, OnError, Rate, Revocation,
    path_matches,
};
use read::Reader;
pub use read::{ConfigError, Problem};
pub use routes::{OIDC_KEYS, ROUTE_KEYS};
pub use telemetry::{DEFAULT_SAMPLE_RATIO, OTEL_VARS, Otlp, OtlpProtocol, Sampling, Telemetry};
pub use tls::{ClientIdentity, ServerTls, UpstreamTls};

/// Environment variable prefix for config keys.
pub const ENV_PREFIX: &str = "ENTRAGATE_";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "ENTRAGATE_CONFIG";
/// Environment variable for `serve --log-format`; it wins over `server.log_format` and, like
/// [`CONFIG_ENV`], is not a config key.
pub const LOG_FORMAT_ENV: &str = "ENTRAGATE_LOG_FORMAT";
/// Public Microsoft Entra ID authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The longest duration any key accepts (100 years of 365.25 days): a longer one is never
/// meant, and every deadline, timer and key age computed from the config stays far from the
/// limits of the clock and of `Duration` arithmetic.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(100 * 31_557_600);

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub entra: Entra,
    pub challenge: Challenge,
    pub identity: Identity,
    /// `[[routes]]`, in order.
    pub routes: Vec<Route>,
    /// `[[oidc]]`: further OpenID Connect issuers.
    pub oidc: Vec<Oidc>,
    /// `[[apis]]`; without any, one API at `/` named [`DEFAULT_API`] made of `[upstream]`
    /// and `[[routes]]`. Never empty.
    pub apis: Vec<Api>,
    /// `[dev]`: the `entragate dev` issuer's tenant (`serve` ignores it).
    pub dev: Dev,
    /// `[[limits]]`, in order.
    pub limits: Vec<LimitRule>,
    /// `[limits_store]`: where counters and the shared revocation list live.
    pub limits_store: LimitsStore,
    /// `[revocation]`.
    pub revocation: Revocation,
    /// `[telemetry]`: OpenTelemetry traces (off without an endpoint).
    pub telemetry: Telemetry,
}

/// One `[[routes]]` rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Normalised path prefix (`/` covers everything).
    pub path: String,
    /// Empty = every method.
    pub methods: Vec<http::Method>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Lower-case client IDs.
    pub clients: Vec<String>,
    /// Each claim must hold one of its values.
    pub claims: Vec<(String, Vec<String>)>,
    pub anonymous: bool,
    /// Overrides `server.max_body` on this route (`Some(None)` = no limit here).
    pub max_body: Option<Option<u64>>,
    /// Entra authentication context the token's `acrs` must hold (step-up), if any.
    pub auth_context: Option<String>,
    /// `ip_allow` / `ip_deny` on the client address.
    pub ip: IpFilter,
}

/// One `[[oidc]]` issuer.
#[derive(Debug, Clone)]
pub struct Oidc {
    pub issuer: String,
    pub discovery_url: String,
    pub audiences: Vec<String>,
    pub allowed_client_ids: Vec<String>,
}

/// `[identity]`: the headers that carry the verified identity upstream. `None` = not sent.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject_header: Option<http::HeaderName>,
    pub tenant_header: Option<http::HeaderName>,
    pub client_header: Option<http::HeaderName>,
    pub scopes_header: Option<http::HeaderName>,
    pub roles_header: Option<http::HeaderName>,
    pub name_header: Option<http::HeaderName>,
    /// The whole verified claim set, base64url JSON (off by default).
    pub claims_header: Option<http::HeaderName>,
    /// Further client headers to remove (besides every `X-Auth-*` and the names above).
    pub strip_headers: Vec<http::HeaderName>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// What the main listener does with a request.
    pub mode: Mode,
    /// Envoy `ext_authz` gRPC (`Authorization/Check`) listener, in any mode.
    pub ext_authz_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// Pass CORS preflights to the upstream without a token.
    pub cors_preflight: bool,
    /// Verified-token cache size (entries); 0 turns the cache off.
    pub token_cache_entries: u64,
    /// Connection-level limits of the proxy listener.
    pub limits: Limits,
    /// Requests handled at once; more are shed with 503 + `Retry-After`.
    pub max_in_flight: usize,
    /// Largest request body in bytes (413 past it); `None` = no limit. Routes may override.
    pub max_body: Option<u64>,
    /// How often `serve` looks at the config file's modification time and reloads it when it
    /// changed; zero = only on SIGHUP.
    pub reload_poll: Duration,
    /// HTTPS on the proxy listener; `None` = plain HTTP.
    pub tls: Option<ServerTls>,
}

/// `server.mode`: what the main listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Authenticate, then forward to `[upstream]`.
    Proxy,
    /// Answer with the decision only (200 + identity headers, 401 or 403), for an ingress's
    /// `auth_request` / `auth-url` / `ForwardAuth`.
    ForwardAuth,
}

impl Mode {
    /// The value as written in the config.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::ForwardAuth => "forward-auth",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `scheme://host:port`, no path.
    pub origin: http::uri::Authority,
    pub scheme: http::uri::Scheme,
    /// Base path without a trailing `/` (empty when the URL has none).
    pub base_path: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Idle keep-alive connections kept open to the upstream, at most; more are opened for
    /// a burst of concurrent requests and closed when it is over.
    pub max_idle_connections: usize,
    /// How long an idle keep-alive connection to the upstream is kept; shorter than the
    /// upstream's own keep-alive timeout, so the gateway closes first.
    pub idle_timeout: Duration,
    /// Requests (so HTTP/1.1 connections) to the upstream in progress at once; more wait for
    /// one to finish, within `timeout`.
    pub max_connections: usize,
    pub authorization: UpstreamAuthorization,
    /// `upstream.protocol`: the HTTP version spoken to the upstream.
    pub protocol: UpstreamProtocol,
    /// `upstream.websocket`: WebSocket upgrades are forwarded (else the upstream sees a plain
    /// request, without the upgrade headers).
    pub websocket: bool,
    /// `upstream.websocket_idle_timeout`: a tunnel with no bytes either way for this long is
    /// closed.
    pub websocket_idle_timeout: Duration,
    /// Used only with an `https` scheme.
    pub tls: UpstreamTls,
}

/// `upstream.protocol`: how the gateway speaks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only (`"http1"`, the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (`"h2c"`); only for an `http` upstream.
    H2c,
    /// HTTP/2 when the upstream's TLS handshake offers it by ALPN, else HTTP/1.1
    /// (`"auto"`); an `http` upstream is HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// The key's value, as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2c => "h2c",
            Self::Auto => "auto",
        }
    }
}

/// What the upstream receives in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuthorization {
    /// The client's bearer token, unchanged.
    Forward,
    /// No `Authorization` header.
    Strip,
    /// `Basic` credentials of the gateway's own (pre-encoded header value).
    Basic(http::HeaderValue),
}

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections waiting in the kernel to be accepted (`listen(2)` backlog, capped by
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// `server.workers`: the main listener's worker threads, each with its own runtime and
    /// upstream connection pools; 0 = one per CPU the process may use.
    pub workers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            workers: 0,
            listen_backlog: 1024,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// A JWS signature algorithm a token may be signed with (`entra.algorithms`): the RSA ones
/// only. `none`, HMAC and every other name have no value here, so they cannot be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

impl Algorithm {
    /// All of them, in the order of their names in `entra.algorithms`' documentation.
    pub const ALL: [Self; 6] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
    ];

    /// The `alg` value (RFC 7518 §3.1).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
        }
    }

    /// The algorithm named `alg`, exactly (names are case-sensitive, RFC 7515 §4.1.1).
    #[must_use]
    pub fn from_name(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == alg)
    }
}

/// `[entra]`
#[derive(Debug, Clone)]
pub struct Entra {
    pub tenant_id: String,
    /// Without a trailing `/`.
    pub authority: String,
    pub audiences: Vec<String>,
    /// Lower-case GUIDs.
    pub allowed_tenants: Vec<String>,
    /// Lower-case GUIDs.
    pub allowed_client_ids: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    /// Longest `exp - iat` (and `exp` - now) accepted.
    pub max_token_lifetime: Duration,
    pub jwks_refresh: Duration,
    pub jwks_min_refetch: Duration,
    pub jwks_max_stale: Duration,
    pub metadata_timeout: Duration,
    /// `entra.cloud`: the v1 issuer's host when the keys come from a file.
    pub cloud: Cloud,
    /// `entra.jwks_file`: signing keys from this JWKS file instead of OpenID discovery and
    /// the JWKS fetch; the issuers are then derived from the tenant and cloud.
    pub jwks_file: Option<String>,
    /// `entra.jwks_file_reload`: how often the file is looked at.
    pub jwks_file_reload: Duration,
}

impl Entra {
    /// `common` and `organizations` accept tokens of many tenants.
    #[must_use]
    pub fn is_multi_tenant(&self) -> bool {
        is_multi_tenant_name(&self.tenant_id)
    }

    /// The v1 and v2 issuer values Entra writes for this tenant (`{tenantid}` for a
    /// multi-tenant one): `https://<sts host>/<tenant>/` and `<authority>/<tenant>/v2.0`, the
    /// sts host of the authority's cloud (else `entra.cloud`). `None` for a tenant given by
    /// domain name: its GUID is only in its metadata.
    #[must_use]
    pub fn derived_issuers(&self) -> Option<(String, String)> {
        let tenant = if self.is_multi_tenant() {
            "{tenantid}".to_owned()
        } else if is_guid(&self.tenant_id) {
            self.tenant_id.to_ascii_lowercase()
        } else {
            return None;
        };
        let cloud = Cloud::of_authority(&self.authority).unwrap_or(self.cloud);
        Some((
            cloud.v1_issuer(&tenant),
            format!("{}/{tenant}/v2.0", self.authority),
        ))
    }
}

/// `[challenge]`
#[derive(Debug, Clone)]
pub struct Challenge {
    pub authorization_uri: String,
    pub realm: String,
    pub resource_metadata: bool,
}

fn is_multi_tenant_name(tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case("common") || tenant.eq_ignore_ascii_case("organizations")
}

/// Every key of the single tables this version understands, as `table.key`. Each one is
/// documented in `docs/configuration.md` (checked by the `docs` integration tests).
pub const KNOWN_KEYS: &[&str] = &[
    "server.listen",
    "server.admin_listen",
    "server.mode",
    "server.ext_authz_listen",
    "server.trusted_proxies",
    "server.public_url",
    "server.log_format",
    "server.shutdown_grace",
    "server.cors_preflight",
    "server.token_cache_entries",
    "server.max_connections",
    "server.listen_backlog",
    "server.max_in_flight",
    "server.workers",
    "server.header_read_timeout",
    "server.max_body",
    "server.max_header_bytes",
    "server.reload_poll",
    "server.tls_cert",
    "server.tls_key",
    "server.tls_reload",
    "upstream.url",
    "upstream.connect_timeout",
    "upstream.timeout",
    "upstream.max_idle_connections",
    "upstream.max_connections",
    "upstream.idle_timeout",
    "upstream.authorization",
    "upstream.basic_user",
    "upstream.basic_password",
    "upstream.basic_password_file",
    "upstream.ca_file",
    "upstream.client_cert",
    "upstream.client_key",
    "upstream.insecure_skip_verify",
    "upstream.protocol",
    "upstream.websocket",
    "upstream.websocket_idle_timeout",
    "entra.tenant_id",
    "entra.authority",
    "entra.cloud",
    "entra.audiences",
    "entra.allowed_tenants",
    "entra.allowed_client_ids",
    "entra.algorithms",
    "entra.clock_skew",
    "entra.max_token_lifetime",
    "entra.jwks_refresh",
    "entra.jwks_min_refetch",
    "entra.jwks_max_stale",
    "entra.metadata_timeout",
    "entra.jwks_file",
    "entra.jwks_file_reload",
    "challenge.authorization_uri",
    "challenge.realm",
    "challenge.resource_metadata",
    "identity.subject_header",
    "identity.tenant_header",
    "identity.client_header",
    "identity.scopes_header",
    "identity.roles_header",
    "identity.name_header",
    "identity.claims_header",
    "identity.strip_headers",
    "dev.tenant_id",
    "dev.api_client_id",
    "dev.api_uris",
    "dev.scopes",
    "dev.roles",
    "dev.access_token_version",
    "dev.token_lifetime",
    "dev.code_lifetime",
    "dev.refresh_token_lifetime",
    "dev.https_listen",
    "dev.ca_file",
    "dev.cloud",
    "dev.users",
    "dev.clients",
    "limits_store.url",
    "limits_store.on_error",
    "limits_store.timeout",
    "revocation.file",
    "telemetry.otlp_endpoint",
    "telemetry.otlp_protocol",
    "telemetry.service_name",
    "telemetry.sample_ratio",
    "telemetry.record_user",
];

/// Arrays of tables, each read (and checked for unknown keys) on its own: their keys are
/// [`ROUTE_KEYS`] and [`OIDC_KEYS`].
pub const ARRAY_TABLES: &[&str] = &["routes", "oidc", "apis", "limits"];

/// Keys of the product contract that this version refuses rather than silently ignores.
const NOT_YET: &[(&str, &str)] = &[];

impl Config {
    /// Parses `toml_text` layered with the `ENTRAGATE_*` entries of `env`.
    ///
    /// `read_file` resolves `*_file` keys (e.g. `upstream.basic_password_file`); tests pass a
    /// closure, the binary passes `std::fs::read_to_string`.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn load(
        toml_text: &str,
        env: &[(String, String)],
        read_file: &dyn Fn(&str) -> std::io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let mut r = Reader::new(toml_text, env)?;
        r.reject_unknown(KNOWN_KEYS, ARRAY_TABLES, NOT_YET);

        let server = read_server(&mut r, read_file);
        let upstream = read_upstream(&mut r, read_file);
        let entra = read_entra(&mut r, read_file);
        let challenge = read_challenge(&mut r, &entra);
        let identity = read_identity(&mut r);
        let routes = routes::read_routes(&mut r);
        let oidc = routes::read_oidc(&mut r);
        let apis = apis::read_apis(&mut r, &upstream, &routes, read_file);
        let dev = dev::read_dev(&mut r);
        let api_names: Vec<&str> = apis.iter().map(|a| a.name.as_str()).collect();
        let limits = limits::read_limits(&mut r, &api_names);
        let limits_store = limits::read_store(&mut r);
        let revocation = limits::read_revocation(&mut r);
        let telemetry = telemetry::read_telemetry(&mut r, env);
        r.finish()?;
        Ok(Self {
            server,
            upstream,
            entra,
            challenge,
            identity,
            routes,
            oidc,
            apis,
            dev,
            limits,
            limits_store,
            revocation,
            telemetry,
        })
    }

    /// The `[entra]` the key store holds Entra tokens to: `entra.audiences` plus every
    /// `[[apis]]` `audiences`, so a token for any API verifies; the gateway then holds each
    /// token to its own API's list.
    #[must_use]
    pub fn key_entra(&self) -> std::borrow::Cow<'_, Entra> {
        let mut extra = self
            .apis
            .iter()
            .filter_map(|a| a.audiences.as_ref())
            .flatten()
            .filter(|a| !self.entra.audiences.contains(a))
            .peekable();
        if extra.peek().is_none() {
            return std::borrow::Cow::Borrowed(&self.entra);
        }
        let mut entra = self.entra.clone();
        for a in extra {
            if !entra.audiences.contains(a) {
                entra.audiences.push(a.clone());
            }
        }
        std::borrow::Cow::Owned(entra)
    }

    /// Reads only the `[dev]` section of `toml_text` (with the environment), for
    /// `entragate dev --config FILE`: the rest of the file is the gateway's and need not be
    /// complete, but an unknown key anywhere is still a problem.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn load_dev(toml_text: &str, env: &[(String, String)]) -> Result<Dev, ConfigError> {
        let mut r = Reader::new(toml_text, env)?;
        r.reject_unknown(KNOWN_KEYS, ARRAY_TABLES, NOT_YET);
        let dev = dev::read_dev(&mut r);
        r.finish()?;
        Ok(dev)
    }

    /// Reads the file at `path` and the process environment, then [`Config::load`].
    ///
    /// # Errors
    /// An unreadable file, or every problem in the config.
    pub fn load_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load(&text, &env, &|p| std::fs::read_to_string(p))
    }
}

/// Where the config file is: `--config`, then `$ENTRAGATE_CONFIG`, then `./entragate.toml`.
#[must_use]
pub fn config_path(flag: Option<PathBuf>, env_value: Option<String>) -> PathBuf {
    flag.or_else(|| env_value.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("entragate.toml"))
}

fn read_server(r: &mut Reader, read_file: &dyn Fn(&str) -> std::io::Result<String>) -> Server {
    let listen = r.parse("server.listen", "0.0.0.0:8080");
    let admin_listen = r.parse("server.admin_listen", "127.0.0.1:9090");
    let mode = match r.string("server.mode", "proxy").as_str() {
        "proxy" => Mode::Proxy,
        "forward-auth" => Mode::ForwardAuth,
        other => {
            r.problem(
                "server.mode",
                format!("must be \"proxy\" or \"forward-auth\", not {other:?}"),
            );
            Mode::Proxy
        }
    };
    let ext_authz_listen = r.opt_string("server.ext_authz_listen").and_then(|text| {
        text.parse::<SocketAddr>()
            .map_err(|e| {
                r.problem(
                    "server.ext_authz_listen",
                    format!("{text:?}: {e} (expected an address like 0.0.0.0:9191)"),
                );
            })
            .ok()
    });
    let trusted_proxies = r
        .strings("server.trusted_proxies")
        .iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    r.problem(
                        "server.trusted_proxies",
                        format!("{s:?} is not an IP address or CIDR"),
                    );
                })
                .ok()
        })
        .collect();
    let public_url = r.opt_string("server.public_url");
    if let Some(url) = &public_url {
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_some() && u.host().is_some() => {}
            _ => r.problem(
                "server.public_url",
                format!("{url:?} is not an absolute URL like https://api.contoso.com"),
            ),
        }
    }
    let log_format = match r.string("server.log_format", "text").as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            r.problem(
                "server.log_format",
                format!("must be \"text\" or \"json\", not {other:?}"),
            );
            LogFormat::Text
        }
    };
    let shutdown_grace = r.duration("server.shutdown_grace", "30s");
    let cors_preflight = r.bool("server.cors_preflight", true);
    let token_cache_entries = r.u64("server.token_cache_entries", 10_000);
    let limits = Limits {
        listen_backlog: u32::try_from(positive(r, "server.listen_backlog", 1024))
            .unwrap_or(u32::MAX),
        max_connections: positive(r, "server.max_connections", 10_000),
        header_read_timeout: r.duration("server.header_read_timeout", "10s"),
        max_header_bytes: positive(r, "server.max_header_bytes", 64 * 1024),
        max_headers: 100,
        workers: usize::try_from(r.u64("server.workers", 0)).unwrap_or(usize::MAX),
    };
    if limits.workers > 1024 {
        r.problem(
            "server.workers",
            "must be at most 1024 (0: one per CPU the process may use)",
        );
    }
    if limits.max_header_bytes < 8192 {
        r.problem("server.max_header_bytes", "must be at least 8192");
    }
    if limits.header_read_timeout.is_zero() {
        r.problem("server.header_read_timeout", "must be longer than 0s");
    }
    let max_in_flight = positive(r, "server.max_in_flight", 10_000);
    let max_body = r.size("server.max_body");
    let reload_poll = r.duration("server.reload_poll", "0s");
    let tls = tls::read_server_tls(r, read_file);
    Server {
        reload_poll,
        tls,
        max_body,
        limits,
        max_in_flight,
        cors_preflight,
        token_cache_entries,
        listen,
        admin_listen,
        mode,
        ext_authz_listen,
        trusted_proxies,
        public_url,
        log_format,
        shutdown_grace,
    }
}

fn read_upstream(r: &mut Reader, read_file: &dyn Fn(&str) -> std::io::Result<String>) -> Upstream {
    let url = r.string("upstream.url", "http://127.0.0.1:8081");
    let (scheme, origin, base_path) = match parse_upstream_url(&url) {
        Ok(parts) => parts,
        Err(msg) => {
            r.problem("upstream.url", msg);
            (
                http::uri::Scheme::HTTP,
                http::uri::Authority::from_static("127.0.0.1:8081"),
                String::new(),
            )
        }
    };
    let connect_timeout = r.duration("upstream.connect_timeout", "5s");
    let timeout = r.duration("upstream.timeout", "60s");
    let max_idle_connections =
        usize::try_from(r.u64("upstream.max_idle_connections", 1024)).unwrap_or(usize::MAX);
    let idle_timeout = r.duration("upstream.idle_timeout", "15s");
    let max_connections = positive(r, "upstream.max_connections", 1024);
    if idle_timeout.is_zero() {
        r.problem(
            "upstream.idle_timeout",
            "must be longer than 0s (max_idle_connections = 0 turns keep-alive off)",
        );
    }
    let user = r.opt_string("upstream.basic_user");
    let password = r.opt_string("upstream.basic_password");
    let password_file = r.opt_string("upstream.basic_password_file");
    let authorization = match r.string("upstream.authorization", "forward").as_str() {
        "forward" => UpstreamAuthorization::Forward,
        "strip" => UpstreamAuthorization::Strip,
        "basic" => basic_authorization(r, user, password, password_file, read_file),
        other => {
            r.problem(
                "upstream.authorization",
                format!("must be \"forward\", \"strip\" or \"basic\", not {other:?}"),
            );
            UpstreamAuthorization::Forward
        }
    };
    let tls = tls::read_upstream_tls(r, read_file, scheme == http::uri::Scheme::HTTPS);
    let protocol = match r.string("upstream.protocol", "http1").as_str() {
        "http1" => UpstreamProtocol::Http1,
        "h2c" if scheme == http::uri::Scheme::HTTPS => {
            r.problem(
                "upstream.protocol",
                "\"h2c\" is HTTP/2 without TLS, for an http:// upstream; for HTTP/2 to an https:// upstream use \"auto\" (HTTP/2 when the upstream offers it by ALPN)",
            );
            UpstreamProtocol::Http1
        }
        "h2c" => UpstreamProtocol::H2c,
        "auto" => UpstreamProtocol::Auto,
        other => {
            r.problem(
                "upstream.protocol",
                format!("must be \"http1\", \"h2c\" or \"auto\", not {other:?}"),
            );
            UpstreamProtocol::Http1
        }
    };
    let websocket = r.bool("upstream.websocket", true);
    let websocket_idle_timeout = r.duration("upstream.websocket_idle_timeout", "5m");
    if websocket_idle_timeout.is_zero() {
        r.problem(
            "upstream.websocket_idle_timeout",
            "must be longer than 0s (upstream.websocket = false turns WebSocket forwarding off)",
        );
    }
    Upstream {
        tls,
        protocol,
        websocket,
        websocket_idle_timeout,
        origin,
        scheme,
        base_path,
        connect_timeout,
        timeout,
        max_idle_connections,
        idle_timeout,
        max_connections,
        authorization,
    }
}

fn basic_authorization(
    r: &mut Reader,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> UpstreamAuthorization {
    use base64::Engine as _;
    let Some(user) = user else {
        r.problem(
            "upstream.basic_user",
            "required when upstream.authorization = \"basic\"",
        );
        return UpstreamAuthorization::Strip;
    };
    if user.contains(':') {
        r.problem("upstream.basic_user", "must not contain ':'");
    }
    let password = match (password, password_file) {
        (Some(p), None) => p,
        (None, Some(path)) => match read_file(&path) {
            // A trailing newline in a mounted secret is never part of the password.
            Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => {
                r.problem(
                    "upstream.basic_password_file",
                    format!("cannot read {path:?}: {e}"),
                );
                return UpstreamAuthorization::Strip;
            }
        },
        (Some(_), Some(_)) => {
            r.problem(
                "upstream.basic_password",
                "set either basic_password or basic_password_file, not both",
            );
            return UpstreamAuthorization::Strip;
        }
        (None, None) => {
            r.problem(
                "upstream.basic_password_file",
                "basic_password_file (or ENTRAGATE_UPSTREAM__BASIC_PASSWORD) is required when upstream.authorization = \"basic\"",
            );
            return UpstreamAuthorization::Strip;
        }
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    match http::HeaderValue::try_from(format!("Basic {encoded}")) {
        Ok(mut v) => {
            v.set_sensitive(true);
            UpstreamAuthorization::Basic(v)
        }
        Err(_) => {
            r.problem("upstream.basic_user", "cannot form a Basic header");
            UpstreamAuthorization::Strip
        }
    }
}

/// Splits `scheme://host:port[/base]` into its parts.
fn parse_upstream_url(
    url: &str,
) -> Result<(http::uri::Scheme, http::uri::Authority, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{url:?} needs a scheme, e.g. http://127.0.0.1:8080"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(format!("scheme must be http or https, not {scheme}"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} needs a host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not allowed; use upstream.authorization".into());
    }
    if uri.query().is_some() {
        return Err("must not carry a query string".into());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base_path))
}

fn read_entra(r: &mut Reader, read_file: &dyn Fn(&str) -> std::io::Result<String>) -> Entra {
    let tenant_id = r.required_string("entra.tenant_id");
    if !tenant_id.is_empty() && !is_multi_tenant_name(&tenant_id) && !is_guid(&tenant_id) {
        let looks_like_domain = tenant_id.contains('.')
            && tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !looks_like_domain {
            r.problem(
                "entra.tenant_id",
                format!(
                    "{tenant_id:?} is neither a GUID, a verified domain, \"organizations\" nor \"common\""
                ),
            );
        }
    }
    let cloud = match r.opt_string("entra.cloud") {
        None => Cloud::Global,
        Some(name) => Cloud::from_name(&name).unwrap_or_else(|| {
            r.problem(
                "entra.cloud",
                format!("must be \"global\", \"usgov\" or \"china\", not {name:?}"),
            );
            Cloud::Global
        }),
    };
    let authority = r
        .string("entra.authority", cloud.authority())
        .trim_end_matches('/')
        .to_owned();
    // An authority of another Microsoft cloud than `entra.cloud` is a mix-up; any other host
    // (a local issuer, a proxy in front of Entra) is the operator's choice.
    if r.has("entra.cloud")
        && let Some(other) = Cloud::of_authority(&authority)
        && other != cloud
    {
        r.problem(
            "entra.authority",
            format!(
                "{authority:?} is a host of the {} cloud, but entra.cloud is {:?} (leave entra.authority out to use {})",
                other.as_str(),
                cloud.as_str(),
                cloud.authority()
            ),
        );
    }
    match authority.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("https" | "http"))
                && u.host().is_some()
                && u.query().is_none() => {}
        _ => r.problem(
            "entra.authority",
            format!("{authority:?} is not an http(s) URL like {DEFAULT_AUTHORITY}"),
        ),
    }
    let audiences = r.strings("entra.audiences");
    if audiences.is_empty() {
        r.problem(
            "entra.audiences",
            "at least one audience is required: the API's Application ID URI (e.g. https://api.contoso.com) and/or its client ID",
        );
    }
    if audiences.iter().any(|a| a.trim().is_empty()) {
        r.problem("entra.audiences", "an audience must not be empty");
    }
    let allowed_tenants = guids(r, "entra.allowed_tenants");
    if is_multi_tenant_name(&tenant_id) && allowed_tenants.is_empty() {
        r.problem(
            "entra.allowed_tenants",
            format!(
                "must list the tenant IDs to accept when entra.tenant_id is {tenant_id:?}; otherwise any Entra tenant could call this API"
            ),
        );
    }
    let allowed_client_ids = guids(r, "entra.allowed_client_ids");
    let algorithms = r
        .strings_or("entra.algorithms", &["RS256"])
        .iter()
        .filter_map(|name| match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            None => {
                r.problem(
                    "entra.algorithms",
                    format!("{name:?} is not allowed; choose among RS256, RS384, RS512, PS256, PS384, PS512"),
                );
                None
            }
        })
        .collect::<Vec<_>>();
    if r.has("entra.algorithms") && r.strings("entra.algorithms").is_empty() {
        r.problem("entra.algorithms", "must name at least one algorithm");
    }
    let clock_skew = r.duration("entra.clock_skew", "60s");
    let max_token_lifetime = r.duration("entra.max_token_lifetime", "28h");
    if max_token_lifetime.is_zero() {
        r.problem(
            "entra.max_token_lifetime",
            "must be longer than 0s (Entra access tokens live 60-90 minutes, up to 28 hours with continuous access evaluation)",
        );
    }
    let jwks_refresh = r.duration("entra.jwks_refresh", "1h");
    let jwks_min_refetch = r.duration("entra.jwks_min_refetch", "5m");
    let jwks_max_stale = r.duration("entra.jwks_max_stale", "24h");
    let metadata_timeout = r.duration("entra.metadata_timeout", "10s");
    if jwks_refresh.is_zero() {
        r.problem("entra.jwks_refresh", "must be longer than 0s");
    }
    if jwks_max_stale <= jwks_refresh {
        r.problem(
            "entra.jwks_max_stale",
            format!(
                "must be longer than entra.jwks_refresh ({}): keys are only refreshed that often, so shorter would drop them while the identity provider is up",
                humantime::format_duration(jwks_refresh)
            ),
        );
    }
    if metadata_timeout.is_zero() {
        r.problem("entra.metadata_timeout", "must be longer than 0s");
    }
    let jwks_file = r.opt_string("entra.jwks_file");
    let jwks_file_reload = r.duration("entra.jwks_file_reload", "10s");
    if let Some(path) = &jwks_file {
        check_jwks_file(r, path, &tenant_id, read_file);
        if jwks_file_reload.is_zero() {
            r.problem("entra.jwks_file_reload", "must be longer than 0s");
        } else if jwks_max_stale <= jwks_file_reload {
            r.problem(
                "entra.jwks_max_stale",
                "must be longer than entra.jwks_file_reload: the file is only read that often",
            );
        }
    }
    Entra {
        tenant_id,
        authority,
        audiences,
        allowed_tenants,
        allowed_client_ids,
        algorithms,
        clock_skew,
        max_token_lifetime,
        jwks_refresh,
        jwks_min_refetch,
        jwks_max_stale,
        metadata_timeout,
        cloud,
        jwks_file,
        jwks_file_reload,
    }
}

/// `entra.jwks_file` must be readable and a JWKS (`{"keys": [...]}` with at least one
/// member) now; whether its keys are usable RSA signing keys is checked when the gateway
/// loads them (at start, a failure names this key too). Its issuers are derived from the
/// tenant, so the tenant must be a GUID (or `common` / `organizations`), not a domain name
/// that only discovery could resolve.
fn check_jwks_file(
    r: &mut Reader,
    path: &str,
    tenant_id: &str,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) {
    const KEY: &str = "entra.jwks_file";
    if !tenant_id.is_empty() && !is_multi_tenant_name(tenant_id) && !is_guid(tenant_id) {
        r.problem(
            "entra.tenant_id",
            format!(
                "must be the tenant ID (a GUID) when entra.jwks_file is set: without discovery the issuer cannot be learnt from {tenant_id:?}"
            ),
        );
    }
    match read_file(path) {
        Err(e) => r.problem(KEY, format!("cannot read {path}: {e}")),
        Ok(text) => {
            let members = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("keys")?.as_array().map(Vec::len));
            match members {
                None => r.problem(
                    KEY,
                    format!("{path} is not a JWKS: a JSON object {{\"keys\": [...]}} as an issuer's jwks_uri serves"),
                ),
                Some(0) => r.problem(KEY, format!("{path} has no keys")),
                Some(_) => {}
            }
        }
    }
}

fn read_challenge(r: &mut Reader, entra: &Entra) -> Challenge {
    let realm = r.opt_string("challenge.realm");
    let authorization_uri = r.opt_string("challenge.authorization_uri");
    // Only values set explicitly are checked: derived ones are as good as entra.* (which is
    // checked, and reported, on its own).
    for (key, value) in [
        ("challenge.realm", &realm),
        ("challenge.authorization_uri", &authorization_uri),
    ] {
        let Some(value) = value else { continue };
        // The values go into WWW-Authenticate unquoted, as Microsoft documents them.
        if value.is_empty()
            || value
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b',' || b == b'"' || b == b'\\')
        {
            r.problem(
                key,
                "must be a URL without spaces, commas, quotes or backslashes",
            );
        }
    }
    let resource_metadata = r.bool("challenge.resource_metadata", false);
    let realm = realm.unwrap_or_else(|| format!("{}/{}", entra.authority, entra.tenant_id));
    let authorization_uri = authorization_uri
        .unwrap_or_else(|| format!("{}/{}/oauth2/authorize", entra.authority, entra.tenant_id));
    Challenge {
        authorization_uri,
        realm,
        resource_metadata,
    }
}

fn read_identity(r: &mut Reader) -> Identity {
    let mut header = |key: &str, default: &str| -> Option<http::HeaderName> {
        let name = r.string(key, default);
        if name.is_empty() {
            return None;
        }
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                r.problem(key, format!("{name:?} is not a valid header name"));
                None
            }
        }
    };
    let identity = Identity {
        subject_header: header("identity.subject_header", "X-Auth-Subject"),
        tenant_header: header("identity.tenant_header", "X-Auth-Tenant"),
        client_header: header("identity.client_header", "X-Auth-Client"),
        scopes_header: header("identity.scopes_header", "X-Auth-Scopes"),
        roles_header: header("identity.roles_header", "X-Auth-Roles"),
        name_header: header("identity.name_header", "X-Auth-Name"),
        claims_header: header("identity.claims_header", ""),
        strip_headers: Vec::new(),
    };
    let strip_headers = r
        .strings("identity.strip_headers")
        .into_iter()
        .filter_map(|name| match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                r.problem(
                    "identity.strip_headers",
                    format!("{name:?} is not a valid header name"),
                );
                None
            }
        })
        .collect();
    for (key, name) in [
        ("identity.subject_header", &identity.subject_header),
        ("identity.tenant_header", &identity.tenant_header),
        ("identity.client_header", &identity.client_header),
        ("identity.scopes_header", &identity.scopes_header),
        ("identity.roles_header", &identity.roles_header),
        ("identity.name_header", &identity.name_header),
        ("identity.claims_header", &identity.claims_header),
    ] {
        if let Some(n) = name
            && matches!(
                n.as_str(),
                "authorization" | "host" | "cookie" | "content-length" | "transfer-encoding"
            )
        {
            r.problem(key, format!("{n} cannot carry the identity"));
        }
    }
    Identity {
        strip_headers,
        ..identity
    }
}

/// A whole number above zero.
fn positive(r: &mut Reader, key: &str, default: u64) -> usize {
    let n = r.u64(key, default);
    if n == 0 {
        r.problem(key, "must be at least 1");
    }
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

fn guids(r: &mut Reader, key: &str) -> Vec<String> {
    r.strings(key)
        .into_iter()
        .filter_map(|s| {
            if is_guid(&s) {
                Some(s.to_ascii_lowercase())
            } else {
                r.problem(key, format!("{s:?} is not a GUID"));
                None
            }
        })
        .collect()
}

/// `8-4-4-4-12` hexadecimal digits, any case.
#[must_use]
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests;
