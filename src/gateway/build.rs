//! The resolve step: the live [`Gateway`] built from plain config data (key store given),
//! once per config, at startup and on each reload; never per request.

use std::sync::Arc;

use super::{Apis, Gateway, IdentityHeaders, ResourceMetadataDoc};
use crate::auth::cache::TokenCache;
use crate::auth::{Challenges, Validator};
use crate::config::Config;
use crate::keys::KeyStore;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::tls::upstream::UpstreamTlsError;

/// Why a config cannot become a gateway.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("challenge header: {0}")]
    Challenge(String),
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
}

impl Gateway {
    /// Everything a request needs for `config`, with `keys` as its key store. Built once per
    /// config (at startup and on each reload), never per request. `listener_tls`: whether the
    /// main listener (bound at startup) serves HTTPS.
    pub fn build(
        config: &Config,
        keys: Arc<KeyStore>,
        metrics: &Arc<Metrics>,
        listener_tls: bool,
    ) -> Result<Self, BuildError> {
        let challenges = Challenges::new(&config.challenge, config.server.public_url.as_deref())
            .map_err(|e| BuildError::Challenge(e.to_string()))?;
        let identity = IdentityHeaders::new(config.identity.clone());
        let apis = Apis::build(config, metrics, listener_tls)?;
        let resource_metadata = config
            .challenge
            .resource_metadata
            .then(|| ResourceMetadataDoc {
                resource: config.server.public_url.clone(),
                authorization_server: format!(
                    "{}/{}/v2.0",
                    config.entra.authority, config.entra.tenant_id
                ),
                scopes_supported: scopes_supported(config, &apis),
            });
        let validator =
            Validator::new(&config.entra, keys)
                .keep_payload(identity.wants_claims())
                // A new cache per config: what it remembers was judged by the old audiences, tenants
                // and clients.
                .with_cache((config.server.token_cache_entries > 0).then(|| {
                    TokenCache::new(config.server.token_cache_entries, Arc::clone(metrics))
                }));
        // One Redis client for the counters and the revocation list of this config.
        let redis = config.limits_store.redis.as_ref().map(|target| {
            Arc::new(crate::redis::Client::new(
                target.clone(),
                config.limits_store.timeout,
            ))
        });
        let limiter = Limiter::new(&config.limits, &config.limits_store, redis.clone(), metrics);
        let revocations = Arc::new(Revocations::new(
            config
                .revocation
                .file
                .as_ref()
                .map(std::path::PathBuf::from),
            redis,
            metrics,
        ));
        Revocations::spawn_refresh(&revocations);
        Ok(Self {
            limiter,
            revocations,
            validator,
            apis,
            cors_preflight: config.server.cors_preflight,
            challenges,
            identity,
            metrics: Arc::clone(metrics),
            resource_metadata,
            max_body: config.server.max_body,
            trusted_proxies: config.server.trusted_proxies.clone(),
            client_proto: if listener_tls { "https" } else { "http" },
            tracing: None,
        })
    }
}

/// RFC 9728 `scopes_supported`: Entra scopes are requested as `<Application ID URI>/<scope>`,
/// so each route scope is prefixed with the first URL-form audience; with no route scopes,
/// `<Application ID URI>/.default` (every permission consented for the client).
fn scopes_supported(config: &Config, apis: &Apis) -> Vec<String> {
    let Some(app_id_uri) = config
        .entra
        .audiences
        .iter()
        .find(|a| a.contains("://"))
        .map(|a| a.trim_end_matches('/'))
    else {
        return Vec::new();
    };
    let mut scopes: Vec<&str> = Vec::new();
    for s in apis.iter().flat_map(|a| a.policy.scopes()) {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    if scopes.is_empty() {
        return vec![format!("{app_id_uri}/.default")];
    }
    scopes
        .into_iter()
        .map(|s| format!("{app_id_uri}/{s}"))
        .collect()
}
