//! `[[apis]]`: several APIs behind one gateway, each with its path prefix, its upstream, its
//! audiences, its routes and its IP filter; and the `ip_allow` / `ip_deny` lists that APIs and
//! routes share.
//!
//! Without `[[apis]]`, `[upstream]` and `[[routes]]` are one API at `/` named
//! [`DEFAULT_API`]. With `[[apis]]`, top-level `[[routes]]` are refused (which API would they
//! belong to?), and `[upstream]` holds the defaults of every API's `upstream = {…}`: an API
//! without its own `url` uses `upstream.url`, which must then be set.

use std::collections::BTreeMap;
use std::net::IpAddr;

use figment::value::{Dict, Tag, Value};
use ipnet::IpNet;

use super::read::{Problem, Reader, key_name};
use super::routes::{entries, field, is_label_name, read_route_list};
use super::{Config, KNOWN_KEYS, Route, Upstream, read_upstream};
use crate::path;

/// The name of the one API that `[upstream]` + `[[routes]]` make without `[[apis]]`: what
/// metrics (`api="default"`) and the access log (`api=default`) call it.
pub const DEFAULT_API: &str = "default";

/// The keys of an `[[apis]]` entry (`upstream` takes every `upstream.*` key, and
/// `strip_prefix`; `routes` takes [`super::ROUTE_KEYS`]).
pub const API_KEYS: &[&str] = &[
    "name",
    "prefix",
    "upstream",
    "audiences",
    "routes",
    "ip_allow",
    "ip_deny",
];

/// One API: requests whose normalised path is under `prefix` (segment-wise) go to it.
#[derive(Debug, Clone)]
pub struct Api {
    pub name: String,
    /// Normalised, without a trailing `/` (`/` for the root).
    pub prefix: String,
    pub upstream: Upstream,
    /// Remove `prefix` from the path the upstream receives (`upstream.strip_prefix`).
    pub strip_prefix: bool,
    /// The audiences a token for this API must carry; `None` = `entra.audiences`.
    pub audiences: Option<Vec<String>>,
    /// This API's `[[apis.routes]]` (or the top-level `[[routes]]` for the default API).
    pub routes: Vec<Route>,
    pub ip: IpFilter,
    /// True for the one API made of `[upstream]` and `[[routes]]` when there is no
    /// `[[apis]]`: its upstream and routes are read from those ([`Config::routes_of`]), so
    /// code that edits `config.routes` edits this API.
    pub implicit: bool,
}

impl Config {
    /// The routes of `api` (for the implicit API, `config.routes`).
    #[must_use]
    pub fn routes_of<'a>(&'a self, api: &'a Api) -> &'a [Route] {
        if api.implicit {
            &self.routes
        } else {
            &api.routes
        }
    }

    /// The upstream of `api` (for the implicit API, `config.upstream`).
    #[must_use]
    pub fn upstream_of<'a>(&'a self, api: &'a Api) -> &'a Upstream {
        if api.implicit {
            &self.upstream
        } else {
            &api.upstream
        }
    }
}

/// `ip_allow` / `ip_deny`: CIDR lists on the client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilter {
    /// Empty = every address not denied.
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl IpFilter {
    /// True when neither list is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// May `client` pass? `ip_deny` wins over `ip_allow`; a non-empty `ip_allow` admits only
    /// its networks. An unknown address passes only a filter with neither list (fail closed).
    /// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are compared as IPv4.
    #[must_use]
    pub fn permits(&self, client: Option<IpAddr>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(ip) = client.map(|ip| ip.to_canonical()) else {
            return false;
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Reads `ip_allow` and `ip_deny` of the entry `name` (a route or an API).
pub(super) fn read_ip_filter(r: &mut Reader, d: &Dict, name: &str) -> IpFilter {
    let mut list = |key: &str| -> Vec<IpNet> {
        field::<Vec<String>>(r, d, name, key, "a list of CIDRs like \"10.0.0.0/8\"")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| match parse_net(&s) {
                Some(n) => Some(n),
                None => {
                    r.problem(
                        &format!("{name}.{key}"),
                        format!("{s:?} is not an IP address or CIDR"),
                    );
                    None
                }
            })
            .collect()
    };
    let allow = list("ip_allow");
    let deny = list("ip_deny");
    IpFilter { allow, deny }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (a /32 or /128).
fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Reads `[[apis]]`; without any, the default API from `upstream` and `routes`.
pub(super) fn read_apis(
    r: &mut Reader,
    upstream: &Upstream,
    routes: &[Route],
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Vec<Api> {
    let entries = entries(r, "apis", API_KEYS);
    if entries.is_empty() {
        if r.has("apis") {
            // `apis = []`: named, but no API; the entry loop above reported a wrong type.
            r.problem("apis", "needs at least one [[apis]] entry (or none at all)");
        }
        return vec![Api {
            name: DEFAULT_API.to_owned(),
            prefix: "/".to_owned(),
            upstream: upstream.clone(),
            strip_prefix: false,
            audiences: None,
            routes: routes.to_vec(),
            ip: IpFilter::default(),
            implicit: true,
        }];
    }
    if r.has("routes") {
        r.problem(
            "routes",
            "top-level [[routes]] cannot be used with [[apis]]: write them as [[apis.routes]] of the API they belong to",
        );
    }
    let defaults = r.value("upstream");
    let mut apis: Vec<Api> = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
    for (entry, d) in entries {
        let Some(api) = read_api(r, &entry, &d, defaults.as_ref(), read_file) else {
            continue;
        };
        if let Some(first) = names.insert(api.name.clone(), entry.clone()) {
            r.problem(
                &format!("{entry}.name"),
                format!("{:?} is already the name of {first}", api.name),
            );
        }
        if let Some(first) = prefixes.insert(api.prefix.clone(), entry.clone()) {
            r.problem(
                &format!("{entry}.prefix"),
                format!("{:?} is already the prefix of {first}", api.prefix),
            );
        }
        apis.push(api);
    }
    apis
}

fn read_api(
    r: &mut Reader,
    entry: &str,
    d: &Dict,
    defaults: Option<&Value>,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Option<Api> {
    let name = field::<String>(r, d, entry, "name", "a string");
    let name = match name {
        Some(n) if is_label_name(&n) => Some(n),
        Some(n) => {
            r.problem(
                &format!("{entry}.name"),
                format!(
                    "{n:?} must be 1-64 letters, digits, '-', '_' or '.' (it is a metric label and a log field)"
                ),
            );
            None
        }
        None => {
            if !d.contains_key("name") {
                r.problem(&format!("{entry}.name"), "is required");
            }
            None
        }
    };
    let prefix = read_prefix(r, entry, d);
    let (upstream, strip_prefix) = read_api_upstream(r, entry, d, defaults, read_file);
    let audiences = field::<Vec<String>>(r, d, entry, "audiences", "a list of strings");
    if let Some(a) = &audiences {
        if a.is_empty() {
            r.problem(
                &format!("{entry}.audiences"),
                "must name at least one audience (leave it out for entra.audiences)",
            );
        }
        if a.iter().any(|s| s.trim().is_empty()) {
            r.problem(
                &format!("{entry}.audiences"),
                "an audience must not be empty",
            );
        }
    }
    let routes = read_route_list(r, &format!("{entry}.routes"), d.get("routes").cloned());
    // Routes of an API are matched on the whole path: a rule outside the prefix never applies.
    if let Some(prefix) = &prefix {
        for (i, route) in routes.iter().enumerate() {
            if !path::is_under(&route.path, prefix) {
                r.problem(
                    &format!("{entry}.routes[{i}].path"),
                    format!(
                        "{:?} is not under the API's prefix {prefix:?} (route paths are whole paths)",
                        route.path
                    ),
                );
            }
        }
    }
    let ip = read_ip_filter(r, d, entry);
    Some(Api {
        name: name?,
        prefix: prefix?,
        upstream: upstream?,
        strip_prefix,
        audiences,
        routes,
        ip,
        implicit: false,
    })
}

fn read_prefix(r: &mut Reader, entry: &str, d: &Dict) -> Option<String> {
    let key = format!("{entry}.prefix");
    let Some(raw) = field::<String>(r, d, entry, "prefix", "a string") else {
        if !d.contains_key("prefix") {
            r.problem(&key, "is required (a path prefix like \"/ehrbase\")");
        }
        return None;
    };
    if !raw.starts_with('/') {
        r.problem(&key, format!("{raw:?} must start with '/'"));
        return None;
    }
    if raw.contains(['?', '#', '*']) {
        r.problem(
            &key,
            format!("{raw:?} must be a plain path (no query, fragment or wildcard)"),
        );
        return None;
    }
    match path::normalize(&raw) {
        Ok(p) if p == "/" => Some(p.into_owned()),
        Ok(p) => Some(p.trim_end_matches('/').to_owned()),
        Err(_) => {
            r.problem(&key, format!("{raw:?} cannot be normalised"));
            None
        }
    }
}

/// `upstream = {…}` of an API: read by the same code as `[upstream]`, over `[upstream]`'s
/// values as defaults; problems are named `apis[0].upstream.key`.
fn read_api_upstream(
    r: &mut Reader,
    entry: &str,
    d: &Dict,
    defaults: Option<&Value>,
    read_file: &dyn Fn(&str) -> std::io::Result<String>,
) -> (Option<Upstream>, bool) {
    let key = format!("{entry}.upstream");
    let own = match d.get("upstream") {
        Some(Value::Dict(_, own)) => own.clone(),
        Some(_) => {
            r.problem(&key, "must be a table: upstream = { url = \"http://…\" }");
            return (None, false);
        }
        None => Dict::new(),
    };
    let mut strip_prefix = false;
    let mut merged: Dict = match defaults {
        Some(Value::Dict(_, d)) => d.clone(),
        _ => Dict::new(),
    };
    for (k, v) in &own {
        if k == "strip_prefix" {
            match v.to_bool() {
                Some(b) => strip_prefix = b,
                None => r.problem(&format!("{key}.strip_prefix"), "expected true or false"),
            }
            continue;
        }
        if !KNOWN_KEYS.contains(&format!("upstream.{k}").as_str()) {
            r.problem(&format!("{key}.{}", key_name(k)), "unknown key");
            continue;
        }
        merged.insert(k.clone(), v.clone());
    }
    if !own.contains_key("url") && !r.has("upstream.url") {
        r.problem(
            &format!("{key}.url"),
            "is required (or a default in [upstream] url): upstream = { url = \"http://…\" }",
        );
        return (None, strip_prefix);
    }
    // A password given as `basic_password` here replaces a default file, and the other way
    // round: one source per API.
    if own.contains_key("basic_password") {
        merged.remove("basic_password_file");
    }
    if own.contains_key("basic_password_file") {
        merged.remove("basic_password");
    }
    let mut nested = Reader::nested("upstream", Value::Dict(Tag::Default, merged));
    let upstream = read_upstream(&mut nested, read_file);
    let mut failed = false;
    for p in nested.take_problems() {
        failed = true;
        let sub = p.key.strip_prefix("upstream.").unwrap_or(&p.key);
        // A default's problem is already reported under `upstream.…`.
        if !own.contains_key(sub) && r.has_problem(&p.key, &p.message) {
            continue;
        }
        r.push(Problem {
            key: format!("{key}.{sub}"),
            env_var: None,
            message: p.message,
        });
    }
    ((!failed).then_some(upstream), strip_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, UpstreamAuthorization};

    const ENTRA: &str = "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n";

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::load(&format!("{ENTRA}{extra}"), &[], &|p| {
            if p == "/run/pw" {
                Ok("secret\n".into())
            } else {
                Err(std::io::Error::other("no such file"))
            }
        })
    }

    fn problems(extra: &str) -> Vec<String> {
        load(extra)
            .err()
            .map(|e| e.problems.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn apis_are_read_with_upstream_defaults_routes_and_filters() {
        let c = load(
            "[upstream]\ntimeout = \"7s\"\nauthorization = \"basic\"\nbasic_user = \"u\"\nbasic_password_file = \"/run/pw\"\n\
             [[apis]]\nname = \"ehrbase\"\nprefix = \"/ehrbase/\"\nupstream = { url = \"http://ehrbase:8080/base\", strip_prefix = true }\n\
             audiences = [\"https://cdr.example.org\"]\nip_allow = [\"10.0.0.0/8\"]\n\
             [[apis.routes]]\npath = \"/ehrbase/admin\"\nauth_context = \"c1\"\nip_deny = [\"10.9.0.0/16\"]\n\
             [[apis]]\nname = \"fhir\"\nprefix = \"/fhir\"\nupstream = { url = \"https://fhir:443\", timeout = \"9s\", authorization = \"forward\" }\n",
        )
        .expect("valid");
        assert_eq!(c.apis.len(), 2);
        let (ehr, fhir) = (&c.apis[0], &c.apis[1]);
        assert_eq!(
            (ehr.name.as_str(), ehr.prefix.as_str()),
            ("ehrbase", "/ehrbase")
        );
        assert!(ehr.strip_prefix && !fhir.strip_prefix);
        assert_eq!(ehr.upstream.origin.as_str(), "ehrbase:8080");
        assert_eq!(ehr.upstream.base_path, "/base");
        assert_eq!(
            ehr.upstream.timeout,
            std::time::Duration::from_secs(7),
            "from [upstream]"
        );
        assert!(matches!(
            ehr.upstream.authorization,
            UpstreamAuthorization::Basic(_)
        ));
        assert_eq!(
            fhir.upstream.timeout,
            std::time::Duration::from_secs(9),
            "its own"
        );
        assert_eq!(fhir.upstream.authorization, UpstreamAuthorization::Forward);
        assert_eq!(
            ehr.audiences.as_deref(),
            Some(&["https://cdr.example.org".to_owned()][..])
        );
        assert_eq!(fhir.audiences, None);
        assert_eq!(
            c.key_entra().audiences,
            ["https://api.contoso.com", "https://cdr.example.org"]
        );
        assert_eq!(ehr.ip.allow, nets(&["10.0.0.0/8"]));
        assert_eq!(ehr.routes[0].auth_context.as_deref(), Some("c1"));
        assert_eq!(ehr.routes[0].ip.deny, nets(&["10.9.0.0/16"]));
    }

    #[test]
    fn without_apis_the_default_api_is_upstream_and_routes() {
        let c = load("[upstream]\nurl = \"http://127.0.0.1:9\"\n[[routes]]\npath = \"/q\"\n")
            .expect("valid");
        assert_eq!(c.apis.len(), 1);
        let api = &c.apis[0];
        assert_eq!((api.name.as_str(), api.prefix.as_str()), (DEFAULT_API, "/"));
        assert_eq!(api.upstream.origin.as_str(), "127.0.0.1:9");
        assert_eq!(api.routes.len(), 1);
        assert!(api.ip.is_empty() && api.audiences.is_none() && !api.strip_prefix);
    }

    #[test]
    fn config_problems_name_the_key() {
        let api = |name: &str, prefix: &str| {
            format!(
                "[[apis]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstream = {{ url = \"http://127.0.0.1:1\" }}\n"
            )
        };
        let p = problems(&format!("{}{}", api("a", "/a"), api("a", "/b")));
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[1].name: \"a\" is already the name of apis[0]")),
            "{p:?}"
        );
        let p = problems(&format!("{}{}", api("a", "/x"), api("b", "/x/")));
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[1].prefix: \"/x\" is already the prefix of apis[0]")),
            "{p:?}"
        );
        let p = problems(&api("a", "x"));
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[0].prefix: \"x\" must start with '/'")),
            "{p:?}"
        );
        let p = problems(&api("a b", "/x"));
        assert!(p.iter().any(|p| p.starts_with("apis[0].name:")), "{p:?}");
        let p = problems(&format!("[[routes]]\npath = \"/q\"\n{}", api("a", "/a")));
        assert!(p.iter().any(|p| p.starts_with("routes: top-level [[routes]] cannot be used with [[apis]]")), "{p:?}");
        let p = problems("[[apis]]\nname = \"a\"\nprefix = \"/a\"\n");
        assert_eq!(
            p,
            [
                "apis[0].upstream.url: is required (or a default in [upstream] url): upstream = { url = \"http://…\" }"
            ]
        );
        let c = load("[upstream]\nurl = \"http://h:1\"\n[[apis]]\nname = \"a\"\nprefix = \"/a\"\n")
            .expect("the url from [upstream]");
        assert_eq!(c.apis[0].upstream.origin.as_str(), "h:1");
        let p = problems(
            "[[apis]]\nname = \"a\"\nprefix = \"/a\"\nupstream = { url = \"ftp://h\", timeout = \"soon\", colour = 1, strip_prefix = \"yes\" }\n",
        );
        for key in [
            "apis[0].upstream.url",
            "apis[0].upstream.timeout",
            "apis[0].upstream.colour",
            "apis[0].upstream.strip_prefix",
        ] {
            assert!(
                p.iter().any(|p| p.starts_with(&format!("{key}:"))),
                "{key}: {p:?}"
            );
        }
        let p = problems(&format!(
            "{}ip_allow = [\"10.0.0.0/40\", \"host\"]\naudiences = []\nlimits = 1\n",
            api("a", "/a")
        ));
        assert!(
            p.iter()
                .filter(|p| p.starts_with("apis[0].ip_allow:"))
                .count()
                == 2,
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("apis[0].audiences:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[0].limits: unknown key")),
            "{p:?}"
        );
        let p = problems(&format!(
            "{}[[apis.routes]]\npath = \"/b/x\"\nauth_context = \"c 1\"\n",
            api("a", "/a")
        ));
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[0].routes[0].path: \"/b/x\" is not under")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("apis[0].routes[0].auth_context:")),
            "{p:?}"
        );
        let p = problems(
            "[[routes]]\npath = \"/s\"\nanonymous = true\nauth_context = \"c1\"\nip_deny = [\"::1/129\"]\n",
        );
        assert!(
            p.iter().any(|p| p.starts_with("routes[0].anonymous:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("routes[0].ip_deny:")),
            "{p:?}"
        );
        // A hostile shape: apis as a table, as a string, an entry that is not a table.
        assert!(
            problems("[apis]\nname = \"a\"\n")
                .iter()
                .any(|p| p.starts_with("apis:"))
        );
        let top = |text: &str| -> Vec<String> {
            Config::load(&format!("{text}{ENTRA}"), &[], &|_| {
                Err(std::io::Error::other("none"))
            })
            .err()
            .map(|e| e.problems.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
        };
        assert!(top("apis = \"x\"\n").iter().any(|p| p.starts_with("apis:")));
        assert!(
            top("apis = [1]\n")
                .iter()
                .any(|p| p.starts_with("apis[0]:"))
        );
        assert!(top("apis = []\n").iter().any(|p| p.starts_with("apis:")));
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| parse_net(s)).collect()
    }

    #[test]
    fn deny_wins_and_allow_admits_only_its_networks() {
        let f = IpFilter {
            allow: nets(&["10.0.0.0/8", "2001:db8::/32"]),
            deny: nets(&["10.1.0.0/16"]),
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert!(f.permits(ip("10.2.3.4")));
        assert!(!f.permits(ip("10.1.3.4")), "deny wins");
        assert!(!f.permits(ip("192.168.1.1")), "not in allow");
        assert!(f.permits(ip("2001:db8::1")));
        assert!(f.permits(ip("::ffff:10.2.3.4")), "mapped v4 is v4");
        assert!(!f.permits(ip("::ffff:10.1.3.4")));
        assert!(!f.permits(None), "an unknown client fails closed");
        let deny_only = IpFilter {
            allow: Vec::new(),
            deny: nets(&["203.0.113.7"]),
        };
        assert!(deny_only.permits(ip("203.0.113.8")));
        assert!(!deny_only.permits(ip("203.0.113.7")));
        assert!(IpFilter::default().permits(None));
    }

    #[test]
    fn a_cidr_with_host_bits_is_its_network() {
        assert_eq!(parse_net("10.1.2.3/8"), parse_net("10.0.0.0/8"));
        assert_eq!(parse_net(" 10.1.2.3 "), parse_net("10.1.2.3/32"));
        assert_eq!(parse_net("10.0.0.0/33"), None);
        assert_eq!(parse_net("example.org"), None);
    }
}
