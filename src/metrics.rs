//! Prometheus metrics, `entragate_*`, kept in plain atomics.
//!
//! Every label set is known at startup (reasons are an enum, key sources are fixed by the
//! config), so recording is one relaxed atomic add and `/metrics` renders a fixed table: no
//! registry, no locks on the request path, and no label that a client could make unbounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::Reason;

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
    /// Shed under load (503): `server.max_in_flight` requests were already in progress.
    Shed,
}

impl Outcome {
    const COUNT: usize = 7 + Reason::ALL.len();

    fn index(self) -> usize {
        match self {
            Self::Allowed => 0,
            Self::Preflight => 1,
            Self::UpstreamUnreachable => 2,
            Self::UpstreamTimeout => 3,
            Self::Anonymous => 4,
            Self::BodyTooLarge => 5,
            Self::Shed => 6,
            Self::Denied(r) => 7 + r.index(),
        }
    }

    fn from_index(i: usize) -> Self {
        match i {
            0 => Self::Allowed,
            1 => Self::Preflight,
            2 => Self::UpstreamUnreachable,
            3 => Self::UpstreamTimeout,
            4 => Self::Anonymous,
            5 => Self::BodyTooLarge,
            6 => Self::Shed,
            n => Self::Denied(Reason::ALL[n - 7]),
        }
    }

    /// `(outcome, reason)` labels.
    #[must_use]
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::Allowed => ("allowed", "none"),
            Self::Preflight => ("preflight", "none"),
            Self::Anonymous => ("anonymous", "none"),
            Self::BodyTooLarge => ("refused", "body_too_large"),
            Self::Shed => ("shed", "overloaded"),
            Self::UpstreamUnreachable => ("upstream_error", "unreachable"),
            Self::UpstreamTimeout => ("upstream_error", "timeout"),
            Self::Denied(r) => ("denied", r.as_str()),
        }
    }
}

/// Cumulative histogram with fixed bucket bounds in seconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets from 100 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Counters of one key source (an issuer's metadata + JWKS).
pub struct KeySourceMetrics {
    pub source: String,
    pub fetch_ok: AtomicU64,
    /// By [`crate::keys::FetchError::kind`].
    pub fetch_errors: [(&'static str, AtomicU64); 6],
    /// Unix seconds of the last successful fetch (0 = never).
    pub last_success_unix: AtomicU64,
    /// Tokens verified with keys older than `jwks_refresh + jwks_min_refetch` (refreshing fails).
    pub stale_served: AtomicU64,
}

impl KeySourceMetrics {
    #[must_use]
    pub fn new(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            fetch_ok: AtomicU64::new(0),
            fetch_errors: [
                ("http_error", AtomicU64::new(0)),
                ("bad_status", AtomicU64::new(0)),
                ("too_large", AtomicU64::new(0)),
                ("bad_json", AtomicU64::new(0)),
                ("no_keys", AtomicU64::new(0)),
                ("issuer_mismatch", AtomicU64::new(0)),
            ],
            last_success_unix: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
        }
    }

    pub fn record_ok(&self) {
        self.fetch_ok.fetch_add(1, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success_unix.store(now, Relaxed);
    }

    pub fn record_error(&self, kind: &str) {
        if let Some((_, c)) = self.fetch_errors.iter().find(|(k, _)| *k == kind) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Total fetches, successful or not.
    #[must_use]
    pub fn fetches(&self) -> u64 {
        self.fetch_ok.load(Relaxed)
            + self
                .fetch_errors
                .iter()
                .map(|(_, c)| c.load(Relaxed))
                .sum::<u64>()
    }
}

/// All of the gateway's metrics.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    pub auth_latency: Histogram,
    pub upstream_latency: Histogram,
    /// Upstream responses by status class: 1xx..5xx.
    upstream_status: [AtomicU64; 5],
    pub in_flight: AtomicU64,
    /// Verified-token cache lookups that skipped signature verification.
    pub token_cache_hits: AtomicU64,
    /// Verified-token cache lookups that found nothing usable.
    pub token_cache_misses: AtomicU64,
    key_sources: RwLock<Vec<Arc<KeySourceMetrics>>>,
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
        Self {
            requests: (0..Outcome::COUNT).map(|_| AtomicU64::new(0)).collect(),
            auth_latency: Histogram::new(LATENCY_BUCKETS),
            upstream_latency: Histogram::new(LATENCY_BUCKETS),
            upstream_status: Default::default(),
            in_flight: AtomicU64::new(0),
            token_cache_hits: AtomicU64::new(0),
            token_cache_misses: AtomicU64::new(0),
            key_sources: RwLock::new(Vec::new()),
        }
    }

    pub fn record_request(&self, outcome: Outcome) {
        self.requests[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Requests so far with this outcome.
    #[must_use]
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome.index()].load(Relaxed)
    }

    pub fn record_upstream_status(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.upstream_status[class].fetch_add(1, Relaxed);
    }

    /// Registers a key source's counters (at startup).
    pub fn add_key_source(&self, m: Arc<KeySourceMetrics>) {
        if let Ok(mut v) = self.key_sources.write() {
            v.push(m);
        }
    }

    /// Prometheus text exposition format 0.0.4.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str(
            "# HELP entragate_requests_total Requests by outcome and reason.\n# TYPE entragate_requests_total counter\n",
        );
        for (i, c) in self.requests.iter().enumerate() {
            let (outcome, reason) = Outcome::from_index(i).labels();
            let _ = writeln!(
                out,
                "entragate_requests_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
        self.auth_latency.render(
            &mut out,
            "entragate_auth_duration_seconds",
            "Time to authenticate a request (token validation, key lookup).",
        );
        self.upstream_latency.render(
            &mut out,
            "entragate_upstream_duration_seconds",
            "Time until the upstream's response headers.",
        );
        out.push_str("# HELP entragate_upstream_responses_total Upstream responses by status class.\n# TYPE entragate_upstream_responses_total counter\n");
        for (i, c) in self.upstream_status.iter().enumerate() {
            let _ = writeln!(
                out,
                "entragate_upstream_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP entragate_requests_in_flight Requests being handled.\n# TYPE entragate_requests_in_flight gauge\nentragate_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP entragate_token_cache_lookups_total Verified-token cache lookups by result.\n# TYPE entragate_token_cache_lookups_total counter\nentragate_token_cache_lookups_total{{result=\"hit\"}} {}\nentragate_token_cache_lookups_total{{result=\"miss\"}} {}",
            self.token_cache_hits.load(Relaxed),
            self.token_cache_misses.load(Relaxed)
        );
        self.render_key_sources(&mut out);
        out
    }

    fn render_key_sources(&self, out: &mut String) {
        let Ok(sources) = self.key_sources.read() else {
            return;
        };
        out.push_str("# HELP entragate_key_fetches_total Metadata + JWKS fetches by key source and result.\n# TYPE entragate_key_fetches_total counter\n");
        for s in sources.iter() {
            let _ = writeln!(
                out,
                "entragate_key_fetches_total{{source=\"{}\",result=\"ok\"}} {}",
                s.source,
                s.fetch_ok.load(Relaxed)
            );
            for (kind, c) in &s.fetch_errors {
                let _ = writeln!(
                    out,
                    "entragate_key_fetches_total{{source=\"{}\",result=\"{kind}\"}} {}",
                    s.source,
                    c.load(Relaxed)
                );
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        out.push_str("# HELP entragate_key_age_seconds Seconds since the last successful key fetch (-1 = never).\n# TYPE entragate_key_age_seconds gauge\n");
        for s in sources.iter() {
            let last = s.last_success_unix.load(Relaxed);
            let age = if last == 0 {
                -1
            } else {
                i64::try_from(now.saturating_sub(last)).unwrap_or(i64::MAX)
            };
            let _ = writeln!(
                out,
                "entragate_key_age_seconds{{source=\"{}\"}} {age}",
                s.source
            );
        }
        out.push_str("# HELP entragate_keys_stale_served_total Tokens verified with keys older than jwks_refresh + jwks_min_refetch, that is while refreshing fails.\n# TYPE entragate_keys_stale_served_total counter\n");
        for s in sources.iter() {
            let _ = writeln!(
                out,
                "entragate_keys_stale_served_total{{source=\"{}\"}} {}",
                s.source,
                s.stale_served.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_index_round_trips() {
        for i in 0..Outcome::COUNT {
            assert_eq!(Outcome::from_index(i).index(), i);
        }
    }

    #[test]
    fn renders_counts() {
        let m = Metrics::new();
        m.record_request(Outcome::Denied(Reason::Expired));
        m.record_request(Outcome::Denied(Reason::Expired));
        m.upstream_latency.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("entragate_requests_total{outcome=\"denied\",reason=\"expired\"} 2"));
        assert!(text.contains("entragate_upstream_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("entragate_upstream_duration_seconds_bucket{le=\"0.0025\"} 0"));
    }
}
