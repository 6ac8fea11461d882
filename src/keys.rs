//! The key store: every issuer this gateway trusts, with its signing keys.
//!
//! For Entra these are two sources per tenant, the v1 and the v2 OpenID metadata under
//! `authority`, the way Microsoft.Identity.Web reads them: a v1 token
//! (`iss = https://sts.windows.net/{tid}/`) is checked against v1 keys and a v2 token against
//! v2 keys. Each source refreshes itself in the background (see [`source`]).
//!
//! With `entra.jwks_file` the two Entra sources read that file instead (the same keys for
//! both), and their issuers are derived from the tenant and cloud
//! ([`crate::config::Entra::derived_issuers`]): only the keys come from the file.

mod fetch;
mod issuer;
mod source;

use std::sync::Arc;

pub use fetch::{
    FetchError, Fetched, Key, MAX_DOCUMENT_BYTES, Metadata, fetch_keys, fetch_metadata,
};
pub use issuer::IssuerTemplate;
pub use source::{KeySet, KeySource, Lookup, Timing};

use crate::config::{Entra, Oidc};
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

/// What a token of an issuer must satisfy besides its signature.
#[derive(Debug, Clone, Default)]
pub struct IssuerPolicy {
    /// Accepted `aud` values, without a trailing `/`.
    pub audiences: Vec<String>,
    /// Lower-case; empty = any client.
    pub allowed_client_ids: Vec<String>,
    /// Lower-case; empty = any tenant the issuer value allows.
    pub allowed_tenants: Vec<String>,
}

/// One trusted issuer: where its keys come from, what it issues, and what its tokens need.
#[derive(Debug)]
pub struct Issuer {
    /// `Some` for Entra's v1/v2 endpoints (the `ver` claim must agree), `None` for `[[oidc]]`.
    pub version: Option<TokenVersion>,
    pub policy: Arc<IssuerPolicy>,
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
    /// Entra's v1 and v2 sources for the tenant, then each `[[oidc]]` issuer.
    #[must_use]
    pub fn new(entra: &Entra, oidc: &[Oidc], client: &reqwest::Client, metrics: &Metrics) -> Self {
        Self::reusing(entra, oidc, client, metrics, None)
    }

    /// Like [`KeyStore::new`], but keeps each source of `previous` that fetches the same
    /// documents on the same schedule, keys and all: a config reload that leaves the
    /// tenant alone neither refetches nor waits for keys. [`KeyStore::unstarted`] names the
    /// sources that are new.
    #[must_use]
    pub fn reusing(
        entra: &Entra,
        oidc: &[Oidc],
        client: &reqwest::Client,
        metrics: &Metrics,
        previous: Option<&KeyStore>,
    ) -> Self {
        let timing = Timing {
            refresh: entra.jwks_refresh,
            min_refetch: entra.jwks_min_refetch,
            max_stale: entra.jwks_max_stale,
        };
        let source = |name: &str, url: String, expected: Option<String>| {
            kept(previous, name, |s| {
                s.is_same(&url, expected.as_deref(), timing)
            })
            .unwrap_or_else(|| {
                Arc::new(KeySource::new(
                    name,
                    url,
                    expected,
                    timing,
                    client.clone(),
                    metrics.key_source(name),
                ))
            })
        };
        let entra_policy = Arc::new(IssuerPolicy {
            audiences: trimmed(&entra.audiences),
            allowed_client_ids: entra.allowed_client_ids.clone(),
            allowed_tenants: entra.allowed_tenants.clone(),
        });
        let mut issuers: Vec<Issuer> = match (&entra.jwks_file, entra.derived_issuers()) {
            (Some(path), Some((v1, v2))) => {
                let timing = Timing {
                    refresh: entra.jwks_file_reload,
                    ..timing
                };
                let file_source = |name: &str, issuer: String| {
                    kept(previous, name, |s| s.is_same_file(path, &issuer, timing)).unwrap_or_else(
                        || {
                            Arc::new(KeySource::file(
                                name,
                                path,
                                issuer,
                                timing,
                                metrics.key_source(name),
                            ))
                        },
                    )
                };
                vec![
                    Issuer {
                        version: Some(TokenVersion::V1),
                        policy: Arc::clone(&entra_policy),
                        source: file_source("entra-v1", v1),
                    },
                    Issuer {
                        version: Some(TokenVersion::V2),
                        policy: Arc::clone(&entra_policy),
                        source: file_source("entra-v2", v2),
                    },
                ]
            }
            // Config refuses a jwks_file with a tenant given by domain name.
            _ => {
                let base = format!("{}/{}", entra.authority, entra.tenant_id);
                [
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
                .map(|(version, name, url)| Issuer {
                    version: Some(version),
                    policy: Arc::clone(&entra_policy),
                    source: source(name, url, None),
                })
                .collect()
            }
        };
        for (i, o) in oidc.iter().enumerate() {
            issuers.push(Issuer {
                version: None,
                policy: Arc::new(IssuerPolicy {
                    audiences: trimmed(&o.audiences),
                    allowed_client_ids: o
                        .allowed_client_ids
                        .iter()
                        .map(|c| c.to_ascii_lowercase())
                        .collect(),
                    allowed_tenants: Vec::new(),
                }),
                source: source(
                    &format!("oidc-{i}"),
                    o.discovery_url.clone(),
                    Some(o.issuer.clone()),
                ),
            });
        }
        Self { issuers }
    }

    /// The sources of this store that are not in `previous` (all of them without one).
    #[must_use]
    pub fn unstarted(&self, previous: Option<&KeyStore>) -> Vec<Arc<KeySource>> {
        self.issuers
            .iter()
            .filter(|i| {
                previous.is_none_or(|p| {
                    !p.issuers
                        .iter()
                        .any(|old| Arc::ptr_eq(&old.source, &i.source))
                })
            })
            .map(|i| Arc::clone(&i.source))
            .collect()
    }

    /// Loads every file source now (a local read, no network): the first failure, with the
    /// file's path, so a start with an unusable `entra.jwks_file` fails naming it.
    ///
    /// # Errors
    /// The first file source whose file does not give usable keys.
    pub async fn load_files(&self) -> Result<(), (String, FetchError)> {
        for issuer in &self.issuers {
            if let Some(path) = issuer.source.file_path() {
                issuer
                    .source
                    .refresh()
                    .await
                    .map_err(|e| (path.display().to_string(), e))?;
            }
        }
        Ok(())
    }

    /// Starts every source's background refresh.
    pub fn spawn_refresh(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.issuers
            .iter()
            .map(|i| tokio::spawn(Arc::clone(&i.source).run()))
            .collect()
    }

    /// The Entra key source of `version`.
    #[must_use]
    pub fn entra(&self, version: TokenVersion) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.version == Some(version))
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

/// The source named `name` of `previous` that `same` says a new one would equal: kept by a
/// reload, keys and all.
fn kept(
    previous: Option<&KeyStore>,
    name: &str,
    same: impl Fn(&KeySource) -> bool,
) -> Option<Arc<KeySource>> {
    previous?
        .issuers
        .iter()
        .find(|i| i.source.name == name && same(&i.source))
        .map(|i| Arc::clone(&i.source))
}

/// Power BI asks for the URL's scheme+host as resource; whether Entra then writes a trailing
/// `/` into `aud` depends on how the Application ID URI was registered. Both are accepted, so
/// audiences are compared without it.
#[must_use]
pub fn trim_slash(s: &str) -> &str {
    s.strip_suffix('/').unwrap_or(s)
}

fn trimmed(v: &[String]) -> Vec<String> {
    v.iter().map(|a| trim_slash(a).to_owned()).collect()
}
