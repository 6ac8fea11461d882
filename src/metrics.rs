//! Prometheus metrics, `entragate_*`, kept in a `prometheus-client` registry.
//!
//! Every label value is known at startup (outcomes and reasons are enums, key sources come
//! from the config), so no client can make a label set grow, and every request-outcome
//! combination is present from the first scrape. Recording is an atomic add on a handle
//! resolved once; `/metrics` is the registry's OpenMetrics text.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reason::Reason;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What happened to a request, for `entragate_requests_total{outcome,reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Authenticated and passed to the upstream (whatever the upstream then answered).
    Allowed,
    /// A CORS preflight, passed on without a token.
    Preflight,
    /// An anonymous route, passed on without a token.
    Anonymous,
    /// Refused by the gateway.
    Denied(Reason),
    /// Authenticated, but the upstream could not be reached (502).
    UpstreamUnreachable,
    /// Authenticated, but the upstream did not answer in time (504).
    UpstreamTimeout,
    /// The request body was over its limit (413).
    BodyTooLarge,
    /// `CONNECT`, which the gateway never tunnels (405).
    MethodNotAllowed,
    /// Shed under load (503): `server.max_in_flight` requests were already in progress.
    Shed,
    /// The client went away (closed the connection, reset the HTTP/2 stream) before its
    /// answer was ready; logged with nginx's status 499.
    ClientClosed,
}

impl Outcome {
    /// `(outcome, reason)` labels.
    #[must_use]
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::Allowed => ("allowed", "none"),
            Self::Preflight => ("preflight", "none"),
            Self::Anonymous => ("anonymous", "none"),
            Self::BodyTooLarge => ("refused", "body_too_large"),
            Self::MethodNotAllowed => ("refused", "method_not_allowed"),
            Self::Shed => ("shed", "overloaded"),
            Self::ClientClosed => ("client_closed", "none"),
            Self::UpstreamUnreachable => ("upstream_error", "unreachable"),
            Self::UpstreamTimeout => ("upstream_error", "timeout"),
            Self::Denied(r) => ("denied", r.as_str()),
        }
    }

    /// Position in [`Outcome::all`].
    fn index(self) -> usize {
        match self {
            Self::Allowed => 0,
            Self::Preflight => 1,
            Self::Anonymous => 2,
            Self::UpstreamUnreachable => 3,
            Self::UpstreamTimeout => 4,
            Self::BodyTooLarge => 5,
            Self::Shed => 6,
            Self::ClientClosed => 7,
            Self::MethodNotAllowed => 8,
            Self::Denied(r) => 9 + r.index(),
        }
    }

    /// Every outcome, in [`Outcome::index`] order.
    fn all() -> impl Iterator<Item = Self> {
        [
            Self::Allowed,
            Self::Preflight,
            Self::Anonymous,
            Self::UpstreamUnreachable,
            Self::UpstreamTimeout,
            Self::BodyTooLarge,
            Self::Shed,
            Self::ClientClosed,
            Self::MethodNotAllowed,
        ]
        .into_iter()
        .chain(Reason::ALL.into_iter().map(Self::Denied))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
    outcome: &'static str,
}

/// The outcome labels of `entragate_api_requests` (the first label of [`Outcome::labels`]).
const API_OUTCOMES: [&str; 8] = [
    "allowed",
    "preflight",
    "anonymous",
    "denied",
    "refused",
    "upstream_error",
    "shed",
    "client_closed",
];

/// The request counters of one API (`[[apis]]` `name`), by outcome: resolved once per API
/// name and kept across reloads, so counting is one atomic add.
#[derive(Debug)]
pub struct ApiMetrics {
    pub name: String,
    /// By [`API_OUTCOMES`].
    requests: Vec<Counter>,
}

impl ApiMetrics {
    /// Counts one request of this API.
    pub fn record(&self, outcome: Outcome) {
        let label = outcome.labels().0;
        if let Some(i) = API_OUTCOMES.iter().position(|o| *o == label) {
            self.requests[i].inc();
        }
    }

    /// Requests of this API so far whose outcome label is `outcome`.
    #[must_use]
    pub fn requests(&self, outcome: &str) -> u64 {
        API_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.requests[i].get())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    source: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// What a revocation entry names, for `entragate_revoked_total{kind}`.
pub const REVOKED_KINDS: [&str; 4] = ["oid", "client", "tenant", "jti"];
/// Ways a call to the limits store (Redis) fails, for `entragate_limits_store_errors_total`.
pub const STORE_ERRORS: [&str; 5] = ["timeout", "io", "down", "protocol", "script"];

/// Rate limits, the limits store and the revocation list.
#[derive(Debug)]
pub struct LimitMetrics {
    rate_limited: Family<LimitLabels, Counter>,
    /// Time of each call to the shared store (Redis).
    pub store_latency: Latency,
    /// By [`STORE_ERRORS`].
    store_errors: Vec<Counter>,
    /// By [`REVOKED_KINDS`].
    revoked: Vec<Counter>,
    /// Entries of the revocation list in force (file and Redis).
    pub revocation_entries: Gauge,
    /// Failed refreshes of the revocation list (file unreadable, Redis unreachable).
    pub revocation_refresh_errors: Counter,
}

impl LimitMetrics {
    /// A request refused by the limit `name`.
    pub fn record_rate_limited(&self, name: &str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: name.to_owned(),
            })
            .inc();
    }

    /// Requests refused by the limit `name` so far.
    #[must_use]
    pub fn rate_limited(&self, name: &str) -> u64 {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: name.to_owned(),
            })
            .get()
    }

    /// A failed store call, by [`crate::redis::Error::kind`] (or `script`).
    pub fn record_store_error(&self, kind: &str) {
        if let Some(i) = STORE_ERRORS.iter().position(|k| *k == kind) {
            self.store_errors[i].inc();
        }
    }

    /// Failed store calls so far.
    #[must_use]
    pub fn store_errors(&self) -> u64 {
        self.store_errors.iter().map(Counter::get).sum()
    }

    /// A request refused by a revocation entry of `kind` ([`REVOKED_KINDS`]).
    pub fn record_revoked(&self, kind: &str) {
        if let Some(i) = REVOKED_KINDS.iter().position(|k| *k == kind) {
            self.revoked[i].inc();
        }
    }

    /// Refusals by a revocation entry of `kind` so far.
    #[must_use]
    pub fn revoked(&self, kind: &str) -> u64 {
        REVOKED_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.revoked[i].get())
    }
}

/// Latency buckets from 100 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A latency histogram in seconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram);

impl Latency {
    fn new() -> Self {
        Self(Histogram::new(LATENCY_BUCKETS.iter().copied()))
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// Results a key fetch can have; `ok` plus every [`crate::keys::FetchError::kind`].
pub const FETCH_RESULTS: [&str; 8] = [
    "ok",
    "http_error",
    "bad_status",
    "too_large",
    "bad_json",
    "no_keys",
    "issuer_mismatch",
    "unreadable",
];

/// The metrics of one key source (an issuer's metadata + JWKS), shared by every key store
/// that uses a source of that name (a reload keeps counting where the last store stopped).
#[derive(Debug)]
pub struct KeySourceMetrics {
    pub source: String,
    /// By [`FETCH_RESULTS`], in that order.
    fetches: Vec<Counter>,
    /// Unix seconds of the last successful fetch (0 = never).
    last_success_unix: AtomicU64,
    stale_served: Counter,
}

impl KeySourceMetrics {
    /// Counts a successful fetch and remembers when it happened.
    pub fn record_ok(&self) {
        self.fetches[0].inc();
        self.last_success_unix.store(unix_now(), Relaxed);
    }

    /// A key file read again and found unchanged: its keys are as fresh as if just
    /// loaded (not counted as a fetch).
    pub fn record_confirmed(&self) {
        self.last_success_unix.store(unix_now(), Relaxed);
    }

    /// Counts a failed fetch by its [`crate::keys::FetchError::kind`].
    pub fn record_error(&self, kind: &str) {
        if let Some(i) = FETCH_RESULTS.iter().position(|k| *k == kind) {
            self.fetches[i].inc();
        }
    }

    /// Counts a token verified with keys older than `jwks_refresh + jwks_min_refetch`.
    pub fn record_stale_served(&self) {
        self.stale_served.inc();
    }

    /// Total fetches, successful or not.
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.fetches.iter().map(Counter::get).sum()
    }

    /// Fetches that ended with `result` (one of [`FETCH_RESULTS`]).
    #[must_use]
    pub fn count_of(&self, result: &str) -> u64 {
        count_by(&FETCH_RESULTS, &self.fetches, result)
    }

    /// Seconds since the last successful fetch; `None` before the first.
    #[must_use]
    pub fn age_seconds(&self) -> Option<u64> {
        match self.last_success_unix.load(Relaxed) {
            0 => None,
            last => Some(unix_now().saturating_sub(last)),
        }
    }
}

type SourceMap = Arc<Mutex<BTreeMap<String, Arc<KeySourceMetrics>>>>;

/// `entragate_key_age_seconds`, computed at scrape time from each source's last success.
#[derive(Debug)]
struct KeyAge(SourceMap);

impl Collector for KeyAge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = lock(&self.0).clone();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "entragate_key_age_seconds",
            "Seconds since the last successful metadata + JWKS fetch of a key source (-1 = never).",
            None,
            gauge.metric_type(),
        )?;
        for (name, m) in sources {
            let age = m
                .age_seconds()
                .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
            let labels = SourceLabels { source: name };
            ConstGauge::new(age).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Why a WebSocket tunnel ended, for `entragate_websocket_tunnels_closed_total{reason}`.
pub const TUNNEL_END_REASONS: [&str; 4] = [
    "token_expired",
    "idle_timeout",
    "client_closed",
    "upstream_closed",
];

/// The count of `name` among counters kept in the order of `names` (0 for another name).
fn count_by(names: &[&str], counters: &[Counter], name: &str) -> u64 {
    names
        .iter()
        .position(|n| *n == name)
        .and_then(|i| counters.get(i))
        .map_or(0, Counter::get)
}

/// WebSocket tunnels through the proxy: open now, and closed by reason.
#[derive(Debug)]
pub struct TunnelMetrics {
    open: Gauge,
    /// By [`TUNNEL_END_REASONS`], in that order.
    closed: Vec<Counter>,
}

impl TunnelMetrics {
    /// A tunnel opened; the guard counts it closed (by the reason it is given) when dropped.
    #[must_use]
    pub fn opened(self: &Arc<Self>) -> OpenTunnel {
        self.open.inc();
        OpenTunnel {
            metrics: Arc::clone(self),
            reason: "client_closed",
        }
    }

    /// Tunnels open now.
    #[must_use]
    pub fn open_now(&self) -> i64 {
        self.open.get()
    }

    /// Tunnels closed for `reason` so far.
    #[must_use]
    pub fn closed(&self, reason: &str) -> u64 {
        count_by(&TUNNEL_END_REASONS, &self.closed, reason)
    }
}

/// One open tunnel in [`TunnelMetrics`].
#[derive(Debug)]
pub struct OpenTunnel {
    metrics: Arc<TunnelMetrics>,
    reason: &'static str,
}

impl OpenTunnel {
    /// Why the tunnel ends (one of [`TUNNEL_END_REASONS`]).
    pub fn ends(&mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.metrics.open.dec();
        if let Some(i) = TUNNEL_END_REASONS.iter().position(|r| *r == self.reason) {
            self.metrics.closed[i].inc();
        }
    }
}

/// TLS certificate reload outcomes, for `entragate_tls_reloads_total{result}`.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub ok: Counter,
    pub error: Counter,
}

/// All of the gateway's metrics. One per process: a config reload keeps it.
pub struct Metrics {
    registry: Registry,
    /// By [`Outcome::index`]: resolved once, so counting is one atomic add.
    requests: Vec<Counter>,
    pub auth_latency: Latency,
    pub upstream_latency: Latency,
    upstream_status: [Counter; 5],
    in_flight: Gauge,
    /// Verified-token cache lookups: `[hit, miss]`.
    token_cache: [Counter; 2],
    key_fetches: Family<FetchLabels, Counter>,
    stale_served: Family<SourceLabels, Counter>,
    key_sources: SourceMap,
    api_requests: Family<ApiLabels, Counter>,
    apis: Mutex<BTreeMap<String, Arc<ApiMetrics>>>,
    /// Listener certificate reloads (stay at zero without TLS).
    pub tls_reloads: Arc<ReloadCounters>,
    /// WebSocket tunnels (the proxy door).
    pub websockets: Arc<TunnelMetrics>,
    /// Rate limits, their store and the revocation list.
    pub limits: LimitMetrics,
    /// Log lines lost (stderr blocked past the queue's limit, or closed); kept by the log
    /// writer, copied here when `/metrics` is rendered.
    log_dropped: Counter,
    /// OpenTelemetry spans exported, dropped, and failed exports (stay at zero without
    /// `[telemetry]`).
    pub traces: TraceCounters,
}

/// The trace exporter's counts: a dead collector shows here, never in request latency.
#[derive(Debug, Clone, Default)]
pub struct TraceCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans lost: the export queue was full, or their batch could not be exported.
    pub dropped: Counter,
    /// Export calls that failed (collector unreachable, timed out, or answered an error).
    pub export_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let by_outcome = Family::<RequestLabels, Counter>::default();
        let requests = Outcome::all()
            .map(|o| {
                let (outcome, reason) = o.labels();
                by_outcome
                    .get_or_create(&RequestLabels { outcome, reason })
                    .clone()
            })
            .collect();
        registry.register(
            "entragate_requests",
            "Requests by outcome and reason.",
            by_outcome,
        );
        let auth_latency = Latency::new();
        registry.register(
            "entragate_auth_duration_seconds",
            "Time to authenticate and authorize a request (token validation, key lookup, route rules).",
            auth_latency.0.clone(),
        );
        let upstream_latency = Latency::new();
        registry.register(
            "entragate_upstream_duration_seconds",
            "Time until the upstream's response headers.",
            upstream_latency.0.clone(),
        );
        let by_class = Family::<ClassLabels, Counter>::default();
        let upstream_status = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| by_class.get_or_create(&ClassLabels { class }).clone());
        registry.register(
            "entragate_upstream_responses",
            "Upstream responses by status class.",
            by_class,
        );
        let in_flight = Gauge::default();
        registry.register(
            "entragate_requests_in_flight",
            "Requests being handled.",
            in_flight.clone(),
        );
        let by_result = Family::<CacheLabels, Counter>::default();
        let token_cache =
            ["hit", "miss"].map(|result| by_result.get_or_create(&CacheLabels { result }).clone());
        registry.register(
            "entragate_token_cache_lookups",
            "Verified-token cache lookups by result (hit: the signature check was skipped).",
            by_result,
        );
        let key_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "entragate_key_fetches",
            "Metadata + JWKS fetches by key source and result.",
            key_fetches.clone(),
        );
        let stale_served = Family::<SourceLabels, Counter>::default();
        registry.register(
            "entragate_keys_stale_served",
            "Tokens verified with keys older than jwks_refresh + jwks_min_refetch, that is while refreshing fails.",
            stale_served.clone(),
        );
        let key_sources = SourceMap::default();
        registry.register_collector(Box::new(KeyAge(Arc::clone(&key_sources))));
        let by_result = Family::<CacheLabels, Counter>::default();
        let [ok, error] =
            ["ok", "error"].map(|result| by_result.get_or_create(&CacheLabels { result }).clone());
        registry.register(
            "entragate_tls_reloads",
            "Listener certificate reloads after its files changed, by result (error: the previous certificate stays).",
            by_result,
        );
        let tls_reloads = Arc::new(ReloadCounters { ok, error });
        let tunnels_open = Gauge::default();
        registry.register(
            "entragate_websocket_tunnels_open",
            "WebSocket tunnels open through the proxy.",
            tunnels_open.clone(),
        );
        let by_reason = Family::<TunnelLabels, Counter>::default();
        let tunnels_closed = TUNNEL_END_REASONS
            .iter()
            .map(|reason| by_reason.get_or_create(&TunnelLabels { reason }).clone())
            .collect();
        registry.register(
            "entragate_websocket_tunnels_closed",
            "WebSocket tunnels closed, by reason (token_expired: the gateway closed it when the token that opened it expired).",
            by_reason,
        );
        let websockets = Arc::new(TunnelMetrics {
            open: tunnels_open,
            closed: tunnels_closed,
        });
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "entragate_api_requests",
            "Requests by API ([[apis]] name; \"default\" without [[apis]]) and outcome; requests under no API are not counted here (reason no_api in entragate_requests).",
            api_requests.clone(),
        );
        let limits = limit_metrics(&mut registry);
        let log_dropped = Counter::default();
        registry.register(
            "entragate_log_lines_dropped",
            "Log lines lost because stderr was blocked past the log queue's limit (16 MiB) or closed.",
            log_dropped.clone(),
        );
        let traces = TraceCounters::default();
        registry.register(
            "entragate_trace_spans_exported",
            "OpenTelemetry spans the OTLP collector accepted.",
            traces.exported.clone(),
        );
        registry.register(
            "entragate_trace_spans_dropped",
            "OpenTelemetry spans lost: the bounded export queue was full, or their batch could not be exported.",
            traces.dropped.clone(),
        );
        registry.register(
            "entragate_trace_export_failures",
            "OTLP export calls that failed (collector unreachable, timed out, or answered an error).",
            traces.export_failures.clone(),
        );
        Self {
            traces,
            limits,
            api_requests,
            apis: Mutex::default(),
            registry,
            requests,
            auth_latency,
            upstream_latency,
            upstream_status,
            in_flight,
            token_cache,
            key_fetches,
            stale_served,
            key_sources,
            tls_reloads,
            websockets,
            log_dropped,
        }
    }

    /// Brings `entragate_log_lines_dropped_total` up to `total`, the log writer's count.
    pub fn set_log_lines_dropped(&self, total: u64) {
        let now = self.log_dropped.get();
        if total > now {
            self.log_dropped.inc_by(total - now);
        }
    }

    pub fn record_request(&self, outcome: Outcome) {
        self.requests[outcome.index()].inc();
    }

    /// Requests so far with this outcome.
    #[must_use]
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome.index()].get()
    }

    pub fn record_upstream_status(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.upstream_status[class].inc();
    }

    /// Counts a request as in flight until the guard is dropped, so a request whose client
    /// goes away mid-way (its future dropped) is not counted forever.
    #[must_use]
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Requests being handled now.
    #[must_use]
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Counts a verified-token cache lookup.
    pub fn record_token_cache(&self, hit: bool) {
        self.token_cache[usize::from(!hit)].inc();
    }

    /// Verified-token cache lookups so far: `(hits, misses)`.
    #[must_use]
    pub fn token_cache(&self) -> (u64, u64) {
        (self.token_cache[0].get(), self.token_cache[1].get())
    }

    /// The counters of the key source `name`, created on first use and shared afterwards.
    #[must_use]
    pub fn key_source(&self, name: &str) -> Arc<KeySourceMetrics> {
        let mut sources = lock(&self.key_sources);
        if let Some(m) = sources.get(name) {
            return Arc::clone(m);
        }
        let fetches = FETCH_RESULTS
            .iter()
            .map(|result| {
                self.key_fetches
                    .get_or_create(&FetchLabels {
                        source: name.to_owned(),
                        result,
                    })
                    .clone()
            })
            .collect();
        let stale_served = self
            .stale_served
            .get_or_create(&SourceLabels {
                source: name.to_owned(),
            })
            .clone();
        let m = Arc::new(KeySourceMetrics {
            source: name.to_owned(),
            fetches,
            last_success_unix: AtomicU64::new(0),
            stale_served,
        });
        sources.insert(name.to_owned(), Arc::clone(&m));
        m
    }

    /// The counters of the API `name`, created on first use (every outcome present from the
    /// first scrape) and shared afterwards, across reloads.
    #[must_use]
    pub fn api(&self, name: &str) -> Arc<ApiMetrics> {
        let mut apis = lock(&self.apis);
        if let Some(m) = apis.get(name) {
            return Arc::clone(m);
        }
        let requests = API_OUTCOMES
            .iter()
            .map(|outcome| {
                self.api_requests
                    .get_or_create(&ApiLabels {
                        api: name.to_owned(),
                        outcome,
                    })
                    .clone()
            })
            .collect();
        let m = Arc::new(ApiMetrics {
            name: name.to_owned(),
            requests,
        });
        apis.insert(name.to_owned(), Arc::clone(&m));
        m
    }

    /// OpenMetrics text ([`CONTENT_TYPE`]).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; an encoder error leaves a partial page.
            tracing::warn!("metrics encoding failed");
        }
        out
    }
}

fn limit_metrics(registry: &mut Registry) -> LimitMetrics {
    let rate_limited = Family::<LimitLabels, Counter>::default();
    registry.register(
        "entragate_rate_limited",
        "Requests refused with 429, by the [[limits]] entry that refused them.",
        rate_limited.clone(),
    );
    let store_latency = Latency::new();
    registry.register(
        "entragate_limits_store_duration_seconds",
        "Time of each call to the limits store (Redis): one per request under a limit, and the revocation list's refreshes.",
        store_latency.0.clone(),
    );
    let by_kind = Family::<KindLabels, Counter>::default();
    let store_errors = STORE_ERRORS
        .iter()
        .map(|kind| by_kind.get_or_create(&KindLabels { kind }).clone())
        .collect();
    registry.register(
        "entragate_limits_store_errors",
        "Failed calls to the limits store (Redis), by kind; requests then follow limits_store.on_error.",
        by_kind,
    );
    let by_kind = Family::<KindLabels, Counter>::default();
    let revoked = REVOKED_KINDS
        .iter()
        .map(|kind| by_kind.get_or_create(&KindLabels { kind }).clone())
        .collect();
    registry.register(
        "entragate_revoked",
        "Requests refused as revoked, by the kind of entry that matched (oid, client, tenant, jti).",
        by_kind,
    );
    let revocation_entries = Gauge::default();
    registry.register(
        "entragate_revocation_entries",
        "Revocation entries in force (file and Redis).",
        revocation_entries.clone(),
    );
    let revocation_refresh_errors = Counter::default();
    registry.register(
        "entragate_revocation_refresh_errors",
        "Failed refreshes of the revocation list (the last good copy stays in force).",
        revocation_refresh_errors.clone(),
    );
    LimitMetrics {
        rate_limited,
        store_latency,
        store_errors,
        revoked,
        revocation_entries,
        revocation_refresh_errors,
    }
}

/// Decrements `entragate_requests_in_flight` when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_every_outcome_from_the_start() {
        let m = Metrics::new();
        m.record_request(Outcome::Denied(Reason::Expired));
        m.record_request(Outcome::Denied(Reason::Expired));
        m.upstream_latency.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("entragate_requests_total{outcome=\"denied\",reason=\"expired\"} 2"));
        assert!(
            text.contains("entragate_requests_total{outcome=\"denied\",reason=\"malformed\"} 0")
        );
        assert!(text.contains("entragate_upstream_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("entragate_upstream_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(m.requests(Outcome::Denied(Reason::Expired)), 2);
    }

    #[test]
    fn outcome_index_matches_all() {
        for (i, o) in Outcome::all().enumerate() {
            assert_eq!(o.index(), i, "{o:?}");
        }
    }

    #[test]
    fn in_flight_guard_decrements_on_drop() {
        let m = Metrics::new();
        let a = m.in_flight();
        let b = m.in_flight();
        assert_eq!(m.in_flight_now(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.in_flight_now(), 0);
    }

    #[test]
    fn key_sources_are_shared_by_name_and_aged() {
        let m = Metrics::new();
        let a = m.key_source("entra-v1");
        let b = m.key_source("entra-v1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.age_seconds(), None);
        assert!(
            m.render()
                .contains("entragate_key_age_seconds{source=\"entra-v1\"} -1")
        );
        a.record_ok();
        a.record_error("no_keys");
        a.record_error("not-a-kind");
        assert_eq!(b.fetches(), 2);
        let text = m.render();
        assert!(text.contains("entragate_key_age_seconds{source=\"entra-v1\"} 0"));
        assert!(
            text.contains("entragate_key_fetches_total{source=\"entra-v1\",result=\"no_keys\"} 1")
        );
    }
}
