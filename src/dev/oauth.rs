//! The rules of the dev issuer's OAuth endpoints, as Entra applies them: which API and which
//! permissions a `scope` (or v1 `resource`) asks for and what the token then carries, PKCE
//! (S256 only), redirect URI matching, client authentication, and Entra's error answer
//! (`error`, an `error_description` starting with the AADSTS code, `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`). The HTTP handlers are in
//! [`super::endpoints`]; the issued codes and refresh tokens in [`grants`].

pub mod grants;

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::config::{Dev, DevClient};

/// The OpenID Connect scopes, which name no API.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// An error answer in Entra's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: StatusCode,
    /// `invalid_grant`, `invalid_client`, ...
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// What follows `AADSTS<code>: `.
    pub message: String,
}

impl EntraError {
    #[must_use]
    pub fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    /// `AADSTS<code>: <message>`, the start of every `error_description`.
    #[must_use]
    pub fn description(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    /// The JSON answer; `correlation_id` echoes the client's `client-request-id` when it
    /// sent one (MSAL does), as Entra's does.
    #[must_use]
    pub fn into_response_with(self, correlation_id: Option<&str>) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = correlation_id
            .filter(|c| uuid::Uuid::parse_str(c).is_ok())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let timestamp = entra_timestamp(SystemTime::now());
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.description()
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// `2026-12-03 14:40:00Z`, as Entra writes its error timestamps.
fn entra_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
}

/// What a request may have: the API's permissions it asks for, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// The resource as the client named it (a v1 token's `aud`).
    pub resource: String,
    /// Delegated scopes (`scp`), for a user's token.
    pub scopes: Vec<String>,
    /// OIDC scopes asked for (`openid`, `offline_access`, ...).
    pub oidc: Vec<String>,
}

impl Permissions {
    #[must_use]
    pub fn offline_access(&self) -> bool {
        self.oidc.iter().any(|s| s == "offline_access")
    }

    #[must_use]
    pub fn openid(&self) -> bool {
        self.oidc.iter().any(|s| s == "openid")
    }
}

/// Whether `resource` names the dev API: its client ID, `api://<client id>`, or one of its
/// Application ID URIs (a trailing `/` tolerated, as Entra does).
#[must_use]
pub fn names_api(dev: &Dev, resource: &str) -> bool {
    let r = resource.trim_end_matches('/');
    r.eq_ignore_ascii_case(&dev.api_client_id)
        || r.strip_prefix("api://")
            .is_some_and(|g| g.eq_ignore_ascii_case(&dev.api_client_id))
        || dev
            .api_uris
            .iter()
            .any(|u| u.trim_end_matches('/').eq_ignore_ascii_case(r))
}

fn resource_not_found(dev: &Dev, resource: &str) -> EntraError {
    EntraError::new(
        "invalid_resource",
        500_011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            dev.tenant_id
        ),
    )
}

fn not_consented(client: &DevClient) -> EntraError {
    EntraError::new(
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.",
            client.client_id, client.name
        ),
    )
}

fn bad_scope(scope: &str, why: &str) -> EntraError {
    EntraError::new(
        "invalid_scope",
        70011,
        format!(
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. {why}"
        ),
    )
}

/// A `scope` parameter taken apart: the API it names, the permission names, the OIDC scopes.
type Split<'a> = (Option<&'a str>, Vec<&'a str>, Vec<String>);

/// Splits a v2 `scope` parameter into the API it names and the permission names.
fn split_scopes<'a>(dev: &Dev, scope: &'a str) -> Result<Split<'a>, EntraError> {
    let mut resource: Option<&str> = None;
    let mut names = Vec::new();
    let mut oidc = Vec::new();
    for s in scope.split_ascii_whitespace() {
        if OIDC_SCOPES.contains(&s) {
            oidc.push(s.to_owned());
            continue;
        }
        let Some((res, name)) = s
            .rsplit_once('/')
            .filter(|(r, n)| !r.is_empty() && !n.is_empty())
        else {
            // A bare name is a Microsoft Graph permission (User.Read): no API of this tenant.
            return Err(resource_not_found(dev, "https://graph.microsoft.com"));
        };
        match resource {
            Some(prev)
                if !prev
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(res.trim_end_matches('/')) =>
            {
                return Err(EntraError::new(
                    "invalid_scope",
                    28000,
                    format!(
                        "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
                    ),
                ));
            }
            _ => resource = Some(res),
        }
        names.push(name);
    }
    Ok((resource, names, oidc))
}

/// Resolves a delegated (user) request's `scope` for `client`, as Entra does:
/// - every scope names the one API (else AADSTS28000), which must be ours (AADSTS500011);
/// - `.default` stands for every scope granted to the client and cannot be mixed with
///   named ones (AADSTS70011);
/// - a named scope must be exposed by the API (AADSTS70011) and granted (AADSTS65001);
/// - the token carries every scope granted on the API (the consent), as Entra's do.
///
/// # Errors
/// The Entra error for the first rule broken.
pub fn delegated(dev: &Dev, client: &DevClient, scope: &str) -> Result<Permissions, EntraError> {
    let (resource, names, oidc) = split_scopes(dev, scope)?;
    let Some(resource) = resource else {
        return Err(bad_scope(
            scope,
            "It must name the API, e.g. api://<API client id>/.default.",
        ));
    };
    if !names_api(dev, resource) {
        return Err(resource_not_found(dev, resource));
    }
    let default = names.contains(&".default");
    if default && names.len() > 1 {
        return Err(bad_scope(
            scope,
            "The .default scope can't be combined with resource-specific scopes.",
        ));
    }
    for n in names.iter().filter(|n| **n != ".default") {
        if !dev.scopes.iter().any(|s| s == n) {
            return Err(bad_scope(
                &format!("{resource}/{n}"),
                "The API does not expose it.",
            ));
        }
        if !client.scopes.iter().any(|s| s == n) {
            return Err(not_consented(client));
        }
    }
    if client.scopes.is_empty() {
        return Err(not_consented(client));
    }
    Ok(Permissions {
        resource: resource.to_owned(),
        scopes: client.scopes.clone(),
        oidc,
    })
}

/// Resolves a client-credentials request's `scope`: exactly `<API>/.default`
/// (AADSTS1002012 otherwise). The token's `roles` are the app roles granted to the client.
///
/// # Errors
/// The Entra error for the first rule broken.
pub fn application(dev: &Dev, scope: &str) -> Result<String, EntraError> {
    let (resource, names, _) = split_scopes(dev, scope)?;
    let (Some(resource), [".default"]) = (resource, names.as_slice()) else {
        {
            return Err(EntraError::new(
                "invalid_scope",
                1_002_012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
    };
    if !names_api(dev, resource) {
        return Err(resource_not_found(dev, resource));
    }
    Ok(resource.to_owned())
}

/// The client named `client_id`, or AADSTS700016.
///
/// # Errors
/// An unknown application.
pub fn find_client<'a>(dev: &'a Dev, client_id: &str) -> Result<&'a DevClient, EntraError> {
    dev.clients
        .iter()
        .find(|c| c.client_id.eq_ignore_ascii_case(client_id))
        .ok_or_else(|| {
            EntraError::new(
                "unauthorized_client",
                700_016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    dev.tenant_id
                ),
            )
        })
}

/// Checks the client's credential: a confidential client must present its secret
/// (AADSTS7000218 when absent, AADSTS7000215 when wrong); a public client must not present
/// one (AADSTS700025). `need_secret` is set for client credentials, which no public client
/// may use.
///
/// # Errors
/// The Entra error for the credential.
pub fn authenticate(
    client: &DevClient,
    secret: Option<&str>,
    need_secret: bool,
) -> Result<(), EntraError> {
    match (&client.secret, secret) {
        (Some(expected), Some(given)) => {
            if constant_time_eq(expected.expose().as_bytes(), given.as_bytes()) {
                Ok(())
            } else {
                Err(EntraError::new(
                    "invalid_client",
                    7_000_215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        client.client_id
                    ),
                ))
            }
        }
        (Some(_), None) => Err(missing_credential()),
        (None, Some(_)) => Err(EntraError::new(
            "invalid_client",
            700_025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        )),
        (None, None) if need_secret => Err(missing_credential()),
        (None, None) => Ok(()),
    }
}

fn missing_credential() -> EntraError {
    EntraError::new(
        "invalid_client",
        7_000_218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `given` is one of the client's registered redirect URIs. As in Entra, a
/// registered `http://localhost` or `http://127.0.0.1` URI matches any port.
#[must_use]
pub fn redirect_allowed(client: &DevClient, given: &str) -> bool {
    client.redirect_uris.iter().any(|r| {
        r == given
            || match (r.parse::<http::Uri>(), given.parse::<http::Uri>()) {
                (Ok(reg), Ok(got)) => {
                    reg.scheme_str() == Some("http")
                        && got.scheme_str() == Some("http")
                        && matches!(reg.host(), Some("localhost" | "127.0.0.1"))
                        && reg.host() == got.host()
                        && reg.path() == got.path()
                }
                _ => false,
            }
    })
}

/// PKCE's S256 check (RFC 7636 §4.6): BASE64URL(SHA256(verifier)) == challenge.
#[must_use]
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    // RFC 7636 §4.1: 43..128 characters of [A-Z a-z 0-9 - . _ ~].
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    constant_time_eq(
        URL_SAFE_NO_PAD.encode(digest.as_ref()).as_bytes(),
        challenge.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEV_APP_CLIENT_ID, POWER_QUERY_CLIENT_ID};

    fn dev() -> Dev {
        Dev {
            scopes: vec!["user_impersonation".into(), "Reports.Read".into()],
            api_uris: vec!["https://api.contoso.example".into()],
            ..Dev::default()
        }
    }

    fn app(d: &Dev) -> DevClient {
        find_client(d, DEV_APP_CLIENT_ID)
            .expect("default app")
            .clone()
    }

    #[test]
    fn pkce_s256_verifies_a_known_pair_and_refuses_others() {
        // The challenge computed independently: base64url(sha256(verifier)) with Python's hashlib.
        let verifier = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(
            verifier,
            "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtd"
        ));
        // `plain` would send the verifier itself as the challenge: never a match.
        assert!(!pkce_s256_matches(verifier, verifier));
        // Too short, or outside the unreserved characters.
        assert!(!pkce_s256_matches("short", challenge));
        let bad = format!("{}+", &verifier[..43]);
        assert!(!pkce_s256_matches(&bad, challenge));
    }

    #[test]
    fn default_scope_means_every_granted_scope_for_a_user() {
        let d = dev();
        let mut c = app(&d);
        c.scopes = vec!["user_impersonation".into(), "Reports.Read".into()];
        let p = delegated(
            &d,
            &c,
            "https://api.contoso.example/.default openid offline_access",
        )
        .expect("granted");
        assert_eq!(p.scopes, ["user_impersonation", "Reports.Read"]);
        assert_eq!(p.resource, "https://api.contoso.example");
        assert!(p.offline_access() && p.openid());
        // A named scope gets the whole consent, as Entra's tokens carry it.
        let p = delegated(&d, &c, "https://api.contoso.example/Reports.Read").expect("granted");
        assert_eq!(p.scopes, ["user_impersonation", "Reports.Read"]);
        assert!(!p.offline_access());
    }

    #[test]
    fn default_scope_means_the_granted_roles_for_an_app() {
        let d = dev();
        let aud = format!("api://{}", d.api_client_id);
        assert_eq!(
            application(&d, &format!("{aud}/.default")).expect("ok"),
            aud
        );
        assert_eq!(
            application(&d, "https://api.contoso.example/user_impersonation")
                .expect_err("not .default")
                .code,
            1_002_012
        );
        assert_eq!(
            application(&d, "api://another/.default")
                .expect_err("other")
                .code,
            500_011
        );
    }

    #[test]
    fn scopes_not_granted_exposed_or_of_two_apis_are_refused() {
        let d = dev();
        let c = find_client(&d, POWER_QUERY_CLIENT_ID).expect("pq").clone();
        let e = delegated(&d, &c, "https://api.contoso.example/Reports.Read").expect_err("x");
        assert_eq!((e.error, e.code), ("invalid_grant", 65001));
        assert!(e.description().starts_with("AADSTS65001: "));
        let e = delegated(&d, &c, "https://api.contoso.example/Nope").expect_err("x");
        assert_eq!((e.error, e.code), ("invalid_scope", 70011));
        let e = delegated(
            &d,
            &c,
            "https://api.contoso.example/.default https://api.contoso.example/user_impersonation",
        )
        .expect_err("x");
        assert_eq!(e.code, 70011);
        let e = delegated(
            &d,
            &c,
            "https://api.contoso.example/.default api://x/.default",
        )
        .expect_err("x");
        assert_eq!(e.code, 28000);
        let e = delegated(&d, &c, "User.Read").expect_err("graph");
        assert_eq!(e.code, 500_011);
        let e = delegated(&d, &c, "openid").expect_err("no api");
        assert_eq!(e.code, 70011);
    }

    #[test]
    fn client_credentials_are_checked_as_entra_does() {
        let d = dev();
        let c = app(&d);
        assert!(authenticate(&c, Some(crate::config::DEV_APP_SECRET), true).is_ok());
        assert_eq!(
            authenticate(&c, Some("wrong"), true).expect_err("x").code,
            7_000_215
        );
        assert_eq!(
            authenticate(&c, None, false).expect_err("x").code,
            7_000_218
        );
        let public = find_client(&d, POWER_QUERY_CLIENT_ID).expect("pq");
        assert!(authenticate(public, None, false).is_ok());
        assert_eq!(
            authenticate(public, Some("x"), false).expect_err("x").code,
            700_025
        );
        assert_eq!(
            authenticate(public, None, true).expect_err("x").code,
            7_000_218
        );
        let e = find_client(&d, "00000000-0000-0000-0000-000000000001").expect_err("unknown");
        assert_eq!((e.error, e.code), ("unauthorized_client", 700_016));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            authenticate(&c, Some("wrong"), true).expect_err("x").status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn loopback_redirects_match_any_port_others_exactly() {
        let d = dev();
        let c = app(&d);
        assert!(redirect_allowed(&c, "http://localhost"));
        assert!(redirect_allowed(&c, "http://localhost:53127"));
        assert!(!redirect_allowed(&c, "http://localhost:53127/other"));
        assert!(!redirect_allowed(&c, "https://localhost"));
        assert!(!redirect_allowed(&c, "http://evil.example"));
    }

    #[test]
    fn errors_have_entras_shape() {
        let e = EntraError::new("invalid_grant", 65001, "x");
        assert!(entra_timestamp(std::time::UNIX_EPOCH).starts_with("1970-01-01 00:00:00"));
        let r = e.into_response_with(Some("not a guid"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
