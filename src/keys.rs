//! The key store: every issuer this gateway trusts, with its signing keys.
//!
//! For Entra these are two sources per tenant, the v1 and the v2 OpenID metadata under
//! `authority`, the way Microsoft.Identity.Web reads them: a v1 token
//! (`iss = https://sts.windows.net/{tid}/`) is checked against v1 keys and a v2 token against
//! v2 keys. Each source refreshes itself in the background (see [`source`]).

mod fetch;
mod issuer;
mod source;

use std::sync::Arc;

pub use fetch::{FetchError, Key, MAX_DOCUMENT_BYTES};
pub use issuer::IssuerTemplate;
pub use source::{KeySet, KeySource, Lookup, Timing};

use crate::config::Entra;
use crate::metrics::Metrics;

/// Token format version, as in Entra's `ver` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    V1,
    V2,
}

impl TokenVersion {
    /// The `ver` claim's value.
    #[must_use]
    pub const fn claim(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// One trusted issuer: where its keys come from and which token version it issues.
#[derive(Debug)]
pub struct Issuer {
    pub version: TokenVersion,
    pub source: Arc<KeySource>,
}

/// All trusted issuers.
#[derive(Debug)]
pub struct KeyStore {
    pub issuers: Vec<Issuer>,
}

/// Result of matching a token's `iss` (and `tid`) against the trusted issuers.
#[derive(Debug)]
pub enum IssuerMatch<'a> {
    Found(&'a Issuer, Arc<KeySet>),
    /// No loaded issuer has this value.
    Mismatch,
    /// Some issuer has no usable keys yet, so a mismatch cannot be told from not knowing.
    Unavailable,
}

impl KeyStore {
    /// The v1 and v2 Entra sources for `entra`'s tenant.
    #[must_use]
    pub fn for_entra(entra: &Entra, client: &reqwest::Client, metrics: &Metrics) -> Self {
        let timing = Timing {
            refresh: entra.jwks_refresh,
            min_refetch: entra.jwks_min_refetch,
            max_stale: entra.jwks_max_stale,
        };
        let base = format!("{}/{}", entra.authority, entra.tenant_id);
        let issuers = [
            (
                TokenVersion::V1,
                "entra-v1",
                format!("{base}/.well-known/openid-configuration"),
            ),
            (
                TokenVersion::V2,
                "entra-v2",
                format!("{base}/v2.0/.well-known/openid-configuration"),
            ),
        ]
        .into_iter()
        .map(|(version, name, url)| {
            let source = Arc::new(KeySource::new(name, url, timing, client.clone()));
            metrics.add_key_source(source.metrics.clone());
            Issuer { version, source }
        })
        .collect();
        Self { issuers }
    }

    /// Starts every source's background refresh.
    pub fn spawn_refresh(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.issuers
            .iter()
            .map(|i| tokio::spawn(Arc::clone(&i.source).run()))
            .collect()
    }

    /// True when every source has usable keys.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.source.is_ready())
    }

    /// The issuer whose (filled) issuer value equals `iss`.
    #[must_use]
    pub fn issuer_for(&self, iss: &str, tid: Option<&str>) -> IssuerMatch<'_> {
        let mut unavailable = false;
        for issuer in &self.issuers {
            match issuer.source.snapshot() {
                Some(set) if set.issuer.matches(iss, tid) => {
                    return IssuerMatch::Found(issuer, set);
                }
                Some(_) => {}
                None => unavailable = true,
            }
        }
        if unavailable {
            IssuerMatch::Unavailable
        } else {
            IssuerMatch::Mismatch
        }
    }
}
