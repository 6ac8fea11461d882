//! `[dev]`: what the `entragate dev` issuer knows of its tenant: the API it issues tokens for
//! (its client ID, Application ID URIs, exposed scopes and app roles, token version), the dev
//! users who can sign in, and the client applications with their secrets, redirect URIs and
//! granted permissions. Every key has a default, so `entragate dev` runs with no file at all.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use figment::value::Dict;

use super::Cloud;
use super::is_guid;
use super::read::Reader;
use super::routes::{entries, field};

/// The dev tenant's ID.
pub const DEV_TENANT: &str = "7e1b1bd0-5a1e-4c3e-9d6b-0c0ffee0d0e0";
/// The dev API's application (client) ID: the `aud` of v2 tokens.
pub const DEV_API_CLIENT_ID: &str = "5e9d1c7a-3b2f-4e61-8a0d-9c4b7f2e6a13";
/// Client ID of Power Query for Excel / Power BI Desktop (a public client).
pub const POWER_QUERY_CLIENT_ID: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
/// The default confidential client (a service or a web app with a secret).
pub const DEV_APP_CLIENT_ID: &str = "3c0a8f1e-6b2d-4c5a-9e7f-1d2b3c4d5e6f";
/// The default confidential client's secret: a published value, for a loopback issuer only.
pub const DEV_APP_SECRET: &str = "entragate-dev-secret";

/// The keys of a `[[dev.users]]` entry.
pub const DEV_USER_KEYS: &[&str] = &["username", "name", "oid", "roles"];
/// The keys of a `[[dev.clients]]` entry.
pub const DEV_CLIENT_KEYS: &[&str] = &[
    "client_id",
    "name",
    "secret",
    "redirect_uris",
    "scopes",
    "roles",
];

/// `[dev]`
#[derive(Debug, Clone)]
pub struct Dev {
    pub tenant_id: String,
    /// The API's application (client) ID, lower case.
    pub api_client_id: String,
    /// The API's Application ID URIs (`identifierUris`); `api://<api_client_id>` always
    /// names it too.
    pub api_uris: Vec<String>,
    /// Delegated scopes the API exposes.
    pub scopes: Vec<String>,
    /// App roles the API defines.
    pub roles: Vec<String>,
    /// `api.requestedAccessTokenVersion`: 1 or 2, on both token endpoints.
    pub access_token_version: u8,
    pub token_lifetime: Duration,
    pub code_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// The HTTPS listener MSAL talks to.
    pub https_listen: SocketAddr,
    /// Where the generated CA certificate is written; `None` = a file in the temp dir.
    pub ca_file: Option<String>,
    pub users: Vec<DevUser>,
    pub clients: Vec<DevClient>,
    /// `dev.cloud`: the cloud whose issuers the metadata and tokens carry; `None` = the
    /// issuer's own address stands in for the authority (v2 `iss` `<dev issuer>/<tid>/v2.0`).
    pub cloud: Option<Cloud>,
}

/// `[[dev.users]]`: someone who can sign in at the dev authorize page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    /// `upn` / `preferred_username`; what `login_hint` names.
    pub username: String,
    pub name: String,
    /// Lower-case GUID.
    pub oid: String,
    /// The API's app roles assigned to the user (`roles` in their tokens).
    pub roles: Vec<String>,
}

/// A client secret: never shown by `Debug`, so never in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// The secret's text, for comparing with what a client presents.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[[dev.clients]]`: an application registration that asks for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevClient {
    /// Lower-case GUID.
    pub client_id: String,
    pub name: String,
    /// `None` = a public client (Power Query, a CLI, MSAL's PublicClientApplication).
    pub secret: Option<Secret>,
    /// Registered redirect URIs (`http://localhost` matches any port, as in Entra).
    pub redirect_uris: Vec<String>,
    /// Delegated permissions on the API granted to the client (admin consent).
    pub scopes: Vec<String>,
    /// Application permissions (app roles) on the API granted to the client.
    pub roles: Vec<String>,
}

impl Default for Dev {
    fn default() -> Self {
        Self {
            tenant_id: DEV_TENANT.to_owned(),
            api_client_id: DEV_API_CLIENT_ID.to_owned(),
            api_uris: vec!["api://entragate-dev".to_owned()],
            scopes: vec!["user_impersonation".to_owned()],
            roles: vec!["AQL.Read.All".to_owned()],
            access_token_version: 2,
            token_lifetime: Duration::from_secs(3600),
            code_lifetime: Duration::from_secs(600),
            refresh_token_lifetime: Duration::from_secs(24 * 3600),
            https_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            ca_file: None,
            users: default_users(),
            clients: default_clients(),
            cloud: None,
        }
    }
}

fn default_users() -> Vec<DevUser> {
    vec![
        DevUser {
            username: "adele@contoso.example".to_owned(),
            name: "Adele Vance".to_owned(),
            oid: "00000000-0000-4000-8000-00000000a11e".to_owned(),
            roles: Vec::new(),
        },
        DevUser {
            username: "alex@contoso.example".to_owned(),
            name: "Alex Wilber".to_owned(),
            oid: "00000000-0000-4000-8000-0000000a1e10".to_owned(),
            roles: Vec::new(),
        },
    ]
}

fn default_clients() -> Vec<DevClient> {
    vec![
        DevClient {
            client_id: POWER_QUERY_CLIENT_ID.to_owned(),
            name: "Power Query for Excel".to_owned(),
            secret: None,
            redirect_uris: vec![
                "https://oauth.powerbi.com/views/oauthredirect.html".to_owned(),
                "http://localhost".to_owned(),
            ],
            scopes: vec!["user_impersonation".to_owned()],
            roles: Vec::new(),
        },
        DevClient {
            client_id: DEV_APP_CLIENT_ID.to_owned(),
            name: "entragate dev app".to_owned(),
            secret: Some(Secret::new(DEV_APP_SECRET)),
            redirect_uris: vec!["http://localhost".to_owned()],
            scopes: vec!["user_impersonation".to_owned()],
            roles: vec!["AQL.Read.All".to_owned()],
        },
    ]
}

/// Reads `[dev]`.
pub(super) fn read_dev(r: &mut Reader) -> Dev {
    let d = Dev::default();
    let tenant_id = r.string("dev.tenant_id", &d.tenant_id).to_ascii_lowercase();
    if !is_guid(&tenant_id) {
        r.problem("dev.tenant_id", format!("{tenant_id:?} is not a GUID"));
    }
    let api_client_id = r
        .string("dev.api_client_id", &d.api_client_id)
        .to_ascii_lowercase();
    if !is_guid(&api_client_id) {
        r.problem(
            "dev.api_client_id",
            format!("{api_client_id:?} is not a GUID"),
        );
    }
    let api_uris = if r.has("dev.api_uris") {
        r.strings("dev.api_uris")
    } else {
        d.api_uris
    };
    for uri in &api_uris {
        if !uri.contains(':') || uri.chars().any(char::is_whitespace) {
            r.problem(
                "dev.api_uris",
                format!("{uri:?} is not an Application ID URI like api://my-api or https://api.contoso.com"),
            );
        }
    }
    let scopes = names(r, "dev.scopes", &d.scopes);
    let roles = names(r, "dev.roles", &d.roles);
    let access_token_version = match r.u64("dev.access_token_version", 2) {
        1 => 1,
        2 => 2,
        other => {
            r.problem(
                "dev.access_token_version",
                format!("must be 1 or 2 (the API's requestedAccessTokenVersion), not {other}"),
            );
            2
        }
    };
    let token_lifetime = nonzero(r, "dev.token_lifetime", "1h");
    let code_lifetime = nonzero(r, "dev.code_lifetime", "10m");
    let refresh_token_lifetime = nonzero(r, "dev.refresh_token_lifetime", "24h");
    let https_listen: SocketAddr = r.parse("dev.https_listen", "127.0.0.1:8443");
    if !https_listen.ip().is_loopback() {
        r.problem(
            "dev.https_listen",
            format!("{https_listen} is not a loopback address: the dev issuer's tokens and published default secret are for this machine only"),
        );
    }
    let ca_file = r.opt_string("dev.ca_file");
    let cloud = r.opt_string("dev.cloud").and_then(|name| {
        let cloud = Cloud::from_name(&name);
        if cloud.is_none() {
            r.problem(
                "dev.cloud",
                format!("must be \"global\", \"usgov\" or \"china\", not {name:?}"),
            );
        }
        cloud
    });
    let users = if r.has("dev.users") {
        entries(r, "dev.users", DEV_USER_KEYS)
            .into_iter()
            .filter_map(|(name, dict)| read_user(r, &name, &dict, &roles))
            .collect()
    } else {
        d.users
    };
    let clients = if r.has("dev.clients") {
        entries(r, "dev.clients", DEV_CLIENT_KEYS)
            .into_iter()
            .filter_map(|(name, dict)| read_client(r, &name, &dict, &scopes, &roles))
            .collect()
    } else {
        d.clients
    };
    unique(
        r,
        "dev.users",
        users.iter().map(|u| u.username.to_ascii_lowercase()),
    );
    unique(
        r,
        "dev.clients",
        clients.iter().map(|c| c.client_id.clone()),
    );
    Dev {
        tenant_id,
        api_client_id,
        api_uris,
        scopes,
        roles,
        access_token_version,
        token_lifetime,
        code_lifetime,
        refresh_token_lifetime,
        https_listen,
        ca_file,
        users,
        clients,
        cloud,
    }
}

fn nonzero(r: &mut Reader, key: &str, default: &'static str) -> Duration {
    let d = r.duration(key, default);
    if d.is_zero() {
        r.problem(key, "must be longer than 0s");
    }
    d
}

/// A list of scope or role names (no spaces: they are joined by spaces in `scp`).
fn names(r: &mut Reader, key: &str, default: &[String]) -> Vec<String> {
    let list = if r.has(key) {
        r.strings(key)
    } else {
        default.to_vec()
    };
    check_names(r, key, &list);
    list
}

fn check_names(r: &mut Reader, key: &str, list: &[String]) {
    for n in list {
        if n.is_empty() || n.chars().any(char::is_whitespace) || n == ".default" {
            r.problem(key, format!("{n:?} is not a scope or role name"));
        }
    }
}

fn unique(r: &mut Reader, key: &str, ids: impl Iterator<Item = String>) {
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(id.clone()) {
            r.problem(key, format!("{id:?} appears twice"));
        }
    }
}

fn read_user(r: &mut Reader, name: &str, d: &Dict, api_roles: &[String]) -> Option<DevUser> {
    let username: Option<String> = field(r, d, name, "username", "a string");
    let Some(username) = username.filter(|u| !u.trim().is_empty()) else {
        r.problem(
            &format!("{name}.username"),
            "is required (the user's sign-in name, e.g. adele@contoso.example)",
        );
        return None;
    };
    let display = field(r, d, name, "name", "a string").unwrap_or_else(|| username.clone());
    let oid = field::<String>(r, d, name, "oid", "a string")
        .unwrap_or_else(|| guid_from(&format!("user:{}", username.to_ascii_lowercase())));
    if !is_guid(&oid) {
        r.problem(&format!("{name}.oid"), format!("{oid:?} is not a GUID"));
    }
    let roles: Vec<String> =
        field(r, d, name, "roles", "a list of app role names").unwrap_or_default();
    defined(r, &format!("{name}.roles"), &roles, api_roles, "dev.roles");
    Some(DevUser {
        username,
        name: display,
        oid: oid.to_ascii_lowercase(),
        roles,
    })
}

fn read_client(
    r: &mut Reader,
    name: &str,
    d: &Dict,
    api_scopes: &[String],
    api_roles: &[String],
) -> Option<DevClient> {
    let client_id: Option<String> = field(r, d, name, "client_id", "a string");
    let Some(client_id) = client_id else {
        r.problem(&format!("{name}.client_id"), "is required (a GUID)");
        return None;
    };
    if !is_guid(&client_id) {
        r.problem(
            &format!("{name}.client_id"),
            format!("{client_id:?} is not a GUID"),
        );
    }
    let display = field(r, d, name, "name", "a string").unwrap_or_else(|| client_id.clone());
    let secret = field::<String>(r, d, name, "secret", "a string");
    if secret.as_deref().is_some_and(str::is_empty) {
        r.problem(
            &format!("{name}.secret"),
            "must not be empty (leave it out for a public client)",
        );
    }
    let redirect_uris: Vec<String> =
        field(r, d, name, "redirect_uris", "a list of URLs").unwrap_or_default();
    for uri in &redirect_uris {
        if uri
            .parse::<http::Uri>()
            .map_or(true, |u| u.scheme().is_none())
        {
            r.problem(
                &format!("{name}.redirect_uris"),
                format!("{uri:?} is not an absolute URL"),
            );
        }
    }
    let scopes: Vec<String> =
        field(r, d, name, "scopes", "a list of scope names").unwrap_or_default();
    defined(
        r,
        &format!("{name}.scopes"),
        &scopes,
        api_scopes,
        "dev.scopes",
    );
    let roles: Vec<String> =
        field(r, d, name, "roles", "a list of app role names").unwrap_or_default();
    defined(r, &format!("{name}.roles"), &roles, api_roles, "dev.roles");
    Some(DevClient {
        client_id: client_id.to_ascii_lowercase(),
        name: display,
        secret: secret.map(|s| Secret::new(&s)),
        redirect_uris,
        scopes,
        roles,
    })
}

/// Each of `granted` must be one the API defines (in `list_key`).
fn defined(r: &mut Reader, key: &str, granted: &[String], defined: &[String], list_key: &str) {
    for g in granted {
        if !defined.contains(g) {
            r.problem(
                key,
                format!("{g:?} is not defined by the API; add it to {list_key} or remove it here"),
            );
        }
    }
}

/// A stable GUID-shaped ID derived from `seed` (the same seed, the same ID).
#[must_use]
pub fn guid_from(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let b = d.as_ref();
    let hex: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Dev, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_dev(text, &env)
    }

    fn keys(e: &ConfigError) -> Vec<&str> {
        e.problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn no_dev_section_gives_the_documented_defaults() {
        let d = load("", &[]).expect("valid");
        assert_eq!(d.tenant_id, DEV_TENANT);
        assert_eq!(d.api_client_id, DEV_API_CLIENT_ID);
        assert_eq!(d.access_token_version, 2);
        assert_eq!(d.code_lifetime, Duration::from_secs(600));
        assert_eq!(d.users.len(), 2);
        let ids: Vec<&str> = d.clients.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(ids, [POWER_QUERY_CLIENT_ID, DEV_APP_CLIENT_ID]);
        assert!(
            d.clients[0].secret.is_none(),
            "Power Query is a public client"
        );
        // The secret never shows in Debug (so never in a log line).
        let debug = format!("{d:?}");
        assert!(!debug.contains(DEV_APP_SECRET), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn users_and_clients_replace_the_defaults() {
        let d = load(
            r#"
[dev]
scopes = ["user_impersonation", "Reports.Read"]
access_token_version = 1
[[dev.users]]
username = "Ada@Example.org"
roles = ["AQL.Read.All"]
[[dev.clients]]
client_id = "0A0B0C0D-0000-4000-8000-000000000001"
secret = "s3cret"
redirect_uris = ["http://localhost"]
scopes = ["Reports.Read"]
"#,
            &[(
                "ENTRAGATE_DEV__TENANT_ID",
                "11111111-2222-4333-8444-555555555555",
            )],
        )
        .expect("valid");
        assert_eq!(d.tenant_id, "11111111-2222-4333-8444-555555555555");
        assert_eq!(d.access_token_version, 1);
        assert_eq!(d.users.len(), 1);
        assert_eq!(d.users[0].name, "Ada@Example.org");
        assert!(
            crate::config::is_guid(&d.users[0].oid),
            "{}",
            d.users[0].oid
        );
        assert_eq!(d.users[0].oid, guid_from("user:ada@example.org"));
        assert_eq!(d.clients.len(), 1);
        assert_eq!(
            d.clients[0].client_id,
            "0a0b0c0d-0000-4000-8000-000000000001"
        );
        assert_eq!(
            d.clients[0].secret.as_ref().map(Secret::expose),
            Some("s3cret")
        );
    }

    #[test]
    fn problems_name_their_key() {
        let e = load(
            r#"
[dev]
tenant_id = "contoso"
access_token_version = 3
code_lifetime = "0s"
https_listen = "0.0.0.0:8443"
colour = "blue"
[[dev.users]]
name = "No Username"
[[dev.users]]
username = "a@b"
oid = "x"
shoe_size = 44
[[dev.clients]]
client_id = "app"
secret = ""
redirect_uris = ["not a url"]
scopes = ["Reports.Read"]
roles = ["Nope"]
[[dev.clients]]
client_id = "0a0b0c0d-0000-4000-8000-000000000001"
[[dev.clients]]
client_id = "0a0b0c0d-0000-4000-8000-000000000001"
"#,
            &[],
        )
        .expect_err("invalid");
        let k = keys(&e);
        for key in [
            "dev.tenant_id",
            "dev.access_token_version",
            "dev.code_lifetime",
            "dev.https_listen",
            "dev.colour",
            "dev.users[0].username",
            "dev.users[1].oid",
            "dev.users[1].shoe_size",
            "dev.clients[0].client_id",
            "dev.clients[0].secret",
            "dev.clients[0].redirect_uris",
            "dev.clients[0].scopes",
            "dev.clients[0].roles",
            "dev.clients",
        ] {
            assert!(k.contains(&key), "{key} not in {k:?}");
        }
        // A secret's value is never in a problem.
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn the_gateway_config_accepts_a_dev_section() {
        let c = Config::load(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n[dev]\naccess_token_version = 1\n",
            &[],
            &|_| Err(std::io::Error::other("no files")),
        )
        .expect("valid");
        assert_eq!(c.dev.access_token_version, 1);
    }
}
