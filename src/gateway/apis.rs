//! The APIs behind the gateway, live: which one a request is for (the first stage after the
//! path is normalised), and each one's routes, upstream, audiences and IP filter.
//!
//! The match is on the normalised path, segment-wise, and the longest prefix wins, so
//! `/ehrbase/admin` can be its own API inside `/ehrbase`. A path under no prefix matches no
//! API: it is authenticated like any other request (a client without a token gets the
//! challenge, so nothing is learnt about which prefixes exist) and then refused with 404
//! `no_api`.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::Policy;
use crate::config::{Api, Config, IpFilter, UpstreamAuthorization};
use crate::keys::trim_slash;
use crate::metrics::{ApiMetrics, Metrics};
use crate::path::is_under;
use crate::tls::upstream::UpstreamTlsError;
use crate::upstream::Forwarder;

/// One API, ready for requests.
#[derive(Debug)]
pub struct LiveApi {
    /// `[[apis]]` `name` ([`crate::config::DEFAULT_API`] without `[[apis]]`).
    pub name: String,
    /// Normalised, `/` for the root.
    pub prefix: String,
    pub policy: Policy,
    /// This API's own upstream and connection pool (`strip_prefix` applied there).
    pub forwarder: Forwarder,
    pub upstream_authorization: UpstreamAuthorization,
    /// The audiences an Entra token must carry for this API, trimmed of a trailing `/`;
    /// `None` when no API names its own, so the validator's `entra.audiences` decide alone.
    pub audiences: Option<Vec<String>>,
    pub ip: IpFilter,
    /// True when a body limit applies anywhere in this API (global or on a route).
    pub any_body_limit: bool,
    /// `entragate_api_requests{api=name}`.
    pub metrics: Arc<ApiMetrics>,
}

impl LiveApi {
    /// True when an Entra token with audiences `aud` is for this API (always, when the
    /// validator's audiences are the API's).
    #[must_use]
    pub fn accepts_audience<'a>(&self, mut aud: impl Iterator<Item = &'a str>) -> bool {
        let Some(ok) = &self.audiences else {
            return true;
        };
        aud.any(|a| ok.iter().any(|o| o == trim_slash(a)))
    }

    /// True when `client` may reach this API (`ip_allow` / `ip_deny`).
    #[must_use]
    pub fn permits(&self, client: Option<IpAddr>) -> bool {
        self.ip.permits(client)
    }
}

/// Every API, longest prefix first.
#[derive(Debug)]
pub struct Apis {
    apis: Vec<LiveApi>,
}

impl Apis {
    /// The live APIs of `config`, each with its own forwarder (connection pool).
    ///
    /// # Errors
    /// An `https` upstream whose TLS client cannot be built.
    pub fn build(
        config: &Config,
        metrics: &Metrics,
        listener_tls: bool,
    ) -> Result<Self, UpstreamTlsError> {
        let own_audiences = config.apis.iter().any(|a| a.audiences.is_some());
        let mut apis = config
            .apis
            .iter()
            .map(|api| live(config, api, own_audiences, metrics, listener_tls))
            .collect::<Result<Vec<_>, _>>()?;
        apis.sort_by_key(|a| std::cmp::Reverse(a.prefix.len()));
        Ok(Self { apis })
    }

    /// The API whose prefix is the longest one the normalised `path` is under.
    #[must_use]
    pub fn find(&self, path: &str) -> Option<&LiveApi> {
        self.apis.iter().find(|a| is_under(path, &a.prefix))
    }

    /// Every API, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &LiveApi> {
        self.apis.iter()
    }
}

fn live(
    config: &Config,
    api: &Api,
    own_audiences: bool,
    metrics: &Metrics,
    listener_tls: bool,
) -> Result<LiveApi, UpstreamTlsError> {
    let (upstream, routes) = (config.upstream_of(api), config.routes_of(api));
    let strip = (api.strip_prefix && api.prefix != "/").then(|| api.prefix.clone());
    let forwarder = Forwarder::new(
        upstream,
        config.server.trusted_proxies.clone(),
        crate::worker::count(config.server.limits.workers),
    )?
    .with_client_tls(listener_tls)
    .with_strip_prefix(strip);
    let audiences = own_audiences.then(|| {
        api.audiences
            .as_ref()
            .unwrap_or(&config.entra.audiences)
            .iter()
            .map(|a| trim_slash(a).to_owned())
            .collect()
    });
    Ok(LiveApi {
        name: api.name.clone(),
        prefix: api.prefix.clone(),
        policy: Policy::new(routes.to_vec()),
        forwarder,
        upstream_authorization: upstream.authorization.clone(),
        audiences,
        ip: api.ip.clone(),
        any_body_limit: config.server.max_body.is_some()
            || routes.iter().any(|r| r.max_body.is_some()),
        metrics: metrics.api(&api.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apis(extra: &str) -> Apis {
        let toml = format!(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n{extra}"
        );
        let config =
            Config::load(&toml, &[], &|_| Err(std::io::Error::other("no files"))).expect("config");
        Apis::build(&config, &Metrics::new(), false).expect("apis")
    }

    #[test]
    fn the_longest_prefix_wins_on_a_segment_boundary() {
        let a = apis(
            "[[apis]]\nname = \"ehr\"\nprefix = \"/ehrbase\"\nupstream = { url = \"http://127.0.0.1:1\" }\n\
             [[apis]]\nname = \"admin\"\nprefix = \"/ehrbase/admin/\"\nupstream = { url = \"http://127.0.0.1:2\" }\n\
             [[apis]]\nname = \"root\"\nprefix = \"/\"\nupstream = { url = \"http://127.0.0.1:3\" }\n",
        );
        let name = |p: &str| a.find(p).map(|x| x.name.as_str());
        assert_eq!(name("/ehrbase"), Some("ehr"));
        assert_eq!(name("/ehrbase/rest/x"), Some("ehr"));
        assert_eq!(name("/ehrbase/admin"), Some("admin"));
        assert_eq!(name("/ehrbase/admin/x"), Some("admin"));
        assert_eq!(name("/ehrbase/administrator"), Some("ehr"));
        assert_eq!(name("/ehrbasement"), Some("root"));
        assert_eq!(name("/"), Some("root"));
    }

    #[test]
    fn without_a_root_api_some_paths_have_none() {
        let a = apis(
            "[[apis]]\nname = \"ehr\"\nprefix = \"/ehrbase\"\nupstream = { url = \"http://127.0.0.1:1\" }\n",
        );
        assert!(a.find("/ehrbase/x").is_some());
        assert!(a.find("/other").is_none());
        assert!(a.find("/").is_none());
        assert!(a.find("/ehrbasex").is_none());
    }

    #[test]
    fn no_apis_is_one_default_api_at_the_root() {
        let a = apis("[[routes]]\npath = \"/q\"\nscopes = [\"s\"]\n");
        let api = a.find("/anything").expect("default api");
        assert_eq!(api.name, crate::config::DEFAULT_API);
        assert_eq!(api.prefix, "/");
        assert!(api.audiences.is_none(), "entra.audiences decide alone");
        assert!(api.policy.route(&http::Method::GET, "/q").is_some());
    }

    #[test]
    fn audiences_are_held_per_api_once_any_api_names_its_own() {
        let a = apis(
            "[[apis]]\nname = \"a\"\nprefix = \"/a\"\nupstream = { url = \"http://127.0.0.1:1\" }\naudiences = [\"api://a/\"]\n\
             [[apis]]\nname = \"b\"\nprefix = \"/b\"\nupstream = { url = \"http://127.0.0.1:2\" }\n",
        );
        let (api_a, api_b) = (a.find("/a").expect("a"), a.find("/b").expect("b"));
        assert!(api_a.accepts_audience(["api://a"].into_iter()));
        assert!(!api_a.accepts_audience(["https://api.contoso.com"].into_iter()));
        assert!(api_b.accepts_audience(["https://api.contoso.com/"].into_iter()));
        assert!(!api_b.accepts_audience(["api://a"].into_iter()));
    }
}
