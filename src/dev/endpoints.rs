//! The dev issuer's OAuth endpoints, per tenant, as Entra serves them:
//! - `GET /{tenant}/oauth2/v2.0/authorize` (and v1 `/oauth2/authorize`): a sign-in page
//!   listing the dev users; `login_hint` naming one signs in at once and redirects with a
//!   code (so a script needs no browser);
//! - `POST /{tenant}/oauth2/v2.0/token`: `client_credentials`, `authorization_code` (PKCE
//!   S256) and `refresh_token`;
//! - `POST /{tenant}/oauth2/token`: the same grants, v1 style (`resource=`).
//!
//! Tokens carry Entra's claims for the version the API asks for
//! (`dev.access_token_version`). Nothing here logs a secret, a code or a token.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::issuer::{Ctx, IssuerState};
use super::oauth::grants::{CodeBinding, Grant};
use super::oauth::{self, EntraError, Permissions};
use crate::config::{Dev, DevClient, DevUser, guid_from};
use crate::keys::TokenVersion;

type Params = HashMap<String, String>;

/// Which token endpoint was called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    V1,
    V2,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn dev_of(s: &IssuerState) -> Dev {
    s.dev.read().map(|d| d.clone()).unwrap_or_default()
}

/// The tenant in the path must be the dev tenant, or `common` / `organizations` (which
/// sign in to the dev tenant, its only one).
fn check_tenant(dev: &Dev, tenant: &str) -> Result<(), EntraError> {
    if tenant.eq_ignore_ascii_case(&dev.tenant_id)
        || tenant.eq_ignore_ascii_case("common")
        || tenant.eq_ignore_ascii_case("organizations")
    {
        Ok(())
    } else {
        Err(EntraError::new(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. The dev issuer's tenant is {}.",
                dev.tenant_id
            ),
        ))
    }
}

fn missing(param: &str) -> EntraError {
    EntraError::new(
        "invalid_request",
        900_144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// A short, stable pairwise `sub` for `oid` as seen by `app`.
fn pairwise(oid: &str, app: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{oid}|{app}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn uti() -> String {
    let id = uuid::Uuid::new_v4();
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// Who a token is for.
enum Subject<'a> {
    User(&'a DevUser),
    App,
}

/// An access token's claims, shaped as Entra shapes `version`.
fn access_claims(
    s: &IssuerState,
    dev: &Dev,
    client: &DevClient,
    subject: &Subject<'_>,
    permissions: &Permissions,
    version: TokenVersion,
) -> Map<String, Value> {
    let now = now_secs();
    let lifetime = dev.token_lifetime.as_secs();
    let mut c = Map::new();
    let aud = match version {
        // v1: the resource as requested; v2: always the API's client ID.
        TokenVersion::V1 => permissions.resource.clone(),
        TokenVersion::V2 => dev.api_client_id.clone(),
    };
    c.insert("aud".into(), json!(aud));
    c.insert("iss".into(), json!(s.issuer(version, &dev.tenant_id)));
    c.insert("iat".into(), json!(now));
    c.insert("nbf".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    let acr = if client.secret.is_some() { "1" } else { "0" };
    match version {
        TokenVersion::V1 => {
            c.insert("appid".into(), json!(client.client_id));
            c.insert("appidacr".into(), json!(acr));
        }
        TokenVersion::V2 => {
            c.insert("azp".into(), json!(client.client_id));
            c.insert("azpacr".into(), json!(acr));
        }
    }
    match subject {
        Subject::User(user) => {
            c.insert("name".into(), json!(user.name));
            c.insert("oid".into(), json!(user.oid));
            c.insert("scp".into(), json!(permissions.scopes.join(" ")));
            if !user.roles.is_empty() {
                c.insert("roles".into(), json!(user.roles));
            }
            c.insert("sub".into(), json!(pairwise(&user.oid, &dev.api_client_id)));
            match version {
                TokenVersion::V1 => {
                    c.insert("amr".into(), json!(["pwd"]));
                    c.insert("upn".into(), json!(user.username));
                    c.insert("unique_name".into(), json!(user.username));
                }
                TokenVersion::V2 => {
                    c.insert("preferred_username".into(), json!(user.username));
                }
            }
        }
        Subject::App => {
            // The client's service principal in the dev tenant.
            let sp = guid_from(&format!("sp:{}", client.client_id));
            c.insert("idtyp".into(), json!("app"));
            c.insert("oid".into(), json!(sp));
            c.insert("sub".into(), json!(sp));
            if !client.roles.is_empty() {
                c.insert("roles".into(), json!(client.roles));
            }
        }
    }
    c.insert("tid".into(), json!(dev.tenant_id));
    c.insert("uti".into(), json!(uti()));
    c.insert("ver".into(), json!(version.claim()));
    c
}

/// An ID token for `client` (always v2-shaped from the v2 endpoint, v1 from the v1 one).
fn id_token(
    s: &IssuerState,
    dev: &Dev,
    client: &DevClient,
    user: &DevUser,
    nonce: Option<&str>,
    endpoint: Endpoint,
) -> String {
    let now = now_secs();
    let version = match endpoint {
        Endpoint::V1 => TokenVersion::V1,
        Endpoint::V2 => TokenVersion::V2,
    };
    let mut c = json!({
        "aud": client.client_id,
        "iss": s.issuer(version, &dev.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + dev.token_lifetime.as_secs(),
        "name": user.name,
        "oid": user.oid,
        "sub": pairwise(&user.oid, &client.client_id),
        "tid": dev.tenant_id,
        "ver": version.claim(),
    });
    if let Some(obj) = c.as_object_mut() {
        match endpoint {
            Endpoint::V1 => obj.insert("upn".into(), json!(user.username)),
            Endpoint::V2 => obj.insert("preferred_username".into(), json!(user.username)),
        };
        if let Some(n) = nonce {
            obj.insert("nonce".into(), json!(n));
        }
    }
    s.sign(c)
}

fn client_info(user: &DevUser, dev: &Dev) -> String {
    URL_SAFE_NO_PAD.encode(json!({"uid": user.oid, "utid": dev.tenant_id}).to_string())
}

fn api_version(dev: &Dev) -> TokenVersion {
    if dev.access_token_version == 1 {
        TokenVersion::V1
    } else {
        TokenVersion::V2
    }
}

// ---------------------------------------------------------------- token endpoints

pub(super) async fn token_v2(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<axum::Form<Params>, FormRejection>,
) -> Response {
    token(&ctx.state, &tenant, &headers, form, Endpoint::V2)
}

pub(super) async fn token_v1(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<axum::Form<Params>, FormRejection>,
) -> Response {
    token(&ctx.state, &tenant, &headers, form, Endpoint::V1)
}

fn token(
    s: &Arc<IssuerState>,
    tenant: &str,
    headers: &HeaderMap,
    form: Result<axum::Form<Params>, FormRejection>,
    endpoint: Endpoint,
) -> Response {
    let correlation = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok());
    let result = match form {
        Ok(axum::Form(p)) => grant(s, tenant, headers, &p, endpoint),
        Err(_) => Err(EntraError::new(
            "invalid_request",
            900_144,
            "The request body must contain the following parameter: 'grant_type'. The body must be application/x-www-form-urlencoded.",
        )),
    };
    match result {
        Ok(body) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(body),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(
                target: "entragate::dev",
                error = e.error,
                code = e.code,
                "dev issuer refused a token request"
            );
            e.into_response_with(correlation)
        }
    }
}

/// The client's ID and secret, from the body or HTTP Basic (`client_secret_basic`).
fn client_credentials(
    p: &Params,
    headers: &HeaderMap,
) -> Result<(String, Option<String>), EntraError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let dec = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((dec(id), dec(secret)))
        });
    if let Some((id, secret)) = basic {
        return Ok((id, Some(secret)));
    }
    let id = p
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("client_id"))?;
    Ok((id.clone(), p.get("client_secret").cloned()))
}

fn grant(
    s: &Arc<IssuerState>,
    tenant: &str,
    headers: &HeaderMap,
    p: &Params,
    endpoint: Endpoint,
) -> Result<Value, EntraError> {
    let dev = dev_of(s);
    check_tenant(&dev, tenant)?;
    let grant_type = p
        .get("grant_type")
        .map(String::as_str)
        .ok_or_else(|| missing("grant_type"))?;
    let (client_id, secret) = client_credentials(p, headers)?;
    let client = oauth::find_client(&dev, &client_id)?;
    let scope = p.get("scope").map_or("", String::as_str);
    let resource = p.get("resource").map(String::as_str);
    match grant_type {
        "client_credentials" => {
            oauth::authenticate(client, secret.as_deref(), true)?;
            let resource = match endpoint {
                Endpoint::V2 => oauth::application(&dev, scope)?,
                Endpoint::V1 => {
                    let r = resource.ok_or_else(|| missing("resource"))?;
                    oauth::application(&dev, &format!("{r}/.default"))?
                }
            };
            let permissions = Permissions {
                resource,
                scopes: Vec::new(),
                oidc: Vec::new(),
            };
            let version = api_version(&dev);
            let claims = access_claims(s, &dev, client, &Subject::App, &permissions, version);
            tracing::info!(
                target: "entragate::dev",
                client_id = %client.client_id,
                grant = "client_credentials",
                "dev issuer issued an app token"
            );
            Ok(response(
                s,
                &dev,
                None,
                &permissions,
                claims,
                None,
                endpoint,
            ))
        }
        "authorization_code" => {
            oauth::authenticate(client, secret.as_deref(), false)?;
            let code = p.get("code").ok_or_else(|| missing("code"))?;
            let g = s.grants.redeem_code(
                code,
                &client.client_id,
                p.get("redirect_uri").map(String::as_str),
                p.get("code_verifier").map(String::as_str),
            )?;
            user_tokens(s, &dev, client, &g, endpoint, p)
        }
        "refresh_token" => {
            oauth::authenticate(client, secret.as_deref(), false)?;
            let rt = p
                .get("refresh_token")
                .ok_or_else(|| missing("refresh_token"))?;
            let mut g = s.grants.use_refresh(rt, &client.client_id)?;
            // A refresh may ask for other scopes of the API: checked like a first request.
            let asked = match (endpoint, resource) {
                (Endpoint::V1, Some(r)) => Some(format!("{r}/.default {scope}")),
                (Endpoint::V2, _) if !scope.trim().is_empty() => Some(scope.to_owned()),
                _ => None,
            };
            if let Some(asked) = asked {
                let had_offline = g.permissions.offline_access();
                g.permissions = oauth::delegated(&dev, client, &asked)?;
                if had_offline && !g.permissions.offline_access() {
                    g.permissions.oidc.push("offline_access".into());
                }
            }
            user_tokens(s, &dev, client, &g, endpoint, p)
        }
        other => Err(EntraError::new(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
    }
}

fn user_tokens(
    s: &IssuerState,
    dev: &Dev,
    client: &DevClient,
    g: &Grant,
    endpoint: Endpoint,
    p: &Params,
) -> Result<Value, EntraError> {
    let user = dev.users.get(g.user).ok_or_else(|| {
        EntraError::new(
            "invalid_grant",
            50034,
            "The user account does not exist in the directory.",
        )
    })?;
    let version = api_version(dev);
    let claims = access_claims(
        s,
        dev,
        client,
        &Subject::User(user),
        &g.permissions,
        version,
    );
    let refresh = g
        .permissions
        .offline_access()
        .then(|| s.grants.issue_refresh(g.clone()));
    let id = g
        .permissions
        .openid()
        .then(|| id_token(s, dev, client, user, g.nonce.as_deref(), endpoint));
    tracing::info!(
        target: "entragate::dev",
        client_id = %client.client_id,
        user = %user.username,
        "dev issuer issued a user token"
    );
    let mut body = response(
        s,
        dev,
        Some(user),
        &g.permissions,
        claims,
        refresh,
        endpoint,
    );
    if let (Some(id), Some(obj)) = (id, body.as_object_mut()) {
        obj.insert("id_token".into(), json!(id));
    }
    if p.get("client_info").map(String::as_str) == Some("1")
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("client_info".into(), json!(client_info(user, dev)));
    }
    Ok(body)
}

fn response(
    s: &IssuerState,
    dev: &Dev,
    user: Option<&DevUser>,
    permissions: &Permissions,
    claims: Map<String, Value>,
    refresh: Option<String>,
    endpoint: Endpoint,
) -> Value {
    let lifetime = dev.token_lifetime.as_secs();
    let now = now_secs();
    let access = s.sign(Value::Object(claims));
    let mut body = match endpoint {
        Endpoint::V2 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access,
        }),
        // The v1 endpoint writes its numbers as strings.
        Endpoint::V1 => json!({
            "token_type": "Bearer",
            "expires_in": lifetime.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "expires_on": (now + lifetime).to_string(),
            "not_before": now.to_string(),
            "resource": permissions.resource,
            "access_token": access,
        }),
    };
    let Some(obj) = body.as_object_mut() else {
        return body;
    };
    if user.is_some() {
        let scope = match endpoint {
            Endpoint::V2 => permissions
                .scopes
                .iter()
                .map(|n| format!("{}/{n}", permissions.resource.trim_end_matches('/')))
                .chain(
                    permissions
                        .oidc
                        .iter()
                        .filter(|o| *o != "offline_access")
                        .cloned(),
                )
                .collect::<Vec<_>>()
                .join(" "),
            Endpoint::V1 => permissions.scopes.join(" "),
        };
        obj.insert("scope".into(), json!(scope));
    }
    if let Some(rt) = refresh {
        obj.insert("refresh_token".into(), json!(rt));
    }
    body
}

// ---------------------------------------------------------------- authorize

pub(super) async fn authorize_v2(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    authorize(&ctx, &tenant, &q, Endpoint::V2)
}

pub(super) async fn authorize_v1(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    authorize(&ctx, &tenant, &q, Endpoint::V1)
}

/// An error the sign-in page shows itself: there is no trusted place to redirect to.
fn error_page(e: &EntraError) -> Response {
    let text = html_escape(&e.description());
    (
        StatusCode::BAD_REQUEST,
        Html(format!(
            "<!doctype html><title>Sign in: error</title><h1>Sorry, but we are having trouble signing you in.</h1><p>{text}</p>"
        )),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// `redirect_uri` with `params` added in the query.
fn redirect(to: &str, params: &[(&str, &str)]) -> Response {
    let mut url = to.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        let _ = write!(url, "{sep}{k}={}", form_encode(v));
        sep = '&';
    }
    (StatusCode::FOUND, [(header::LOCATION, url)]).into_response()
}

fn redirect_error(to: &str, e: &EntraError, state: Option<&str>) -> Response {
    let desc = e.description();
    let mut params = vec![("error", e.error), ("error_description", desc.as_str())];
    if let Some(st) = state {
        params.push(("state", st));
    }
    redirect(to, &params)
}

fn authorize(ctx: &Ctx, tenant: &str, q: &Params, endpoint: Endpoint) -> Response {
    let s = &ctx.state;
    let dev = dev_of(s);
    if let Err(e) = check_tenant(&dev, tenant) {
        return error_page(&e);
    }
    let Some(client_id) = q.get("client_id") else {
        return error_page(&missing("client_id"));
    };
    let client = match oauth::find_client(&dev, client_id) {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return error_page(&missing("redirect_uri"));
    };
    if !oauth::redirect_allowed(client, redirect_uri) {
        return error_page(&EntraError::new(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{}'. Add it to dev.clients[].redirect_uris.",
                client.client_id
            ),
        ));
    }
    let state = q.get("state").map(String::as_str);
    // From here on, errors go back to the client's redirect URI.
    if q.get("response_type").map(String::as_str) != Some("code") {
        return redirect_error(
            redirect_uri,
            &EntraError::new(
                "unsupported_response_type",
                700_054,
                "The dev issuer supports response_type=code only.",
            ),
            state,
        );
    }
    let challenge = q.get("code_challenge").cloned();
    match (
        challenge.as_deref(),
        q.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(_), Some("S256")) => {}
        (Some(_), _) => {
            return redirect_error(
                redirect_uri,
                &EntraError::new(
                    "invalid_request",
                    501_491,
                    "The code_challenge_method must be S256: the plain method is not accepted.",
                ),
                state,
            );
        }
        (None, _) if client.secret.is_none() => {
            return redirect_error(
                redirect_uri,
                &EntraError::new(
                    "invalid_request",
                    9_002_325,
                    "Proof Key for Code Exchange is required for a public client: send code_challenge with code_challenge_method=S256.",
                ),
                state,
            );
        }
        (None, _) => {}
    }
    let scope = match (endpoint, q.get("resource")) {
        (Endpoint::V1, Some(r)) => {
            format!("{r}/.default {}", q.get("scope").map_or("", String::as_str))
        }
        _ => q.get("scope").cloned().unwrap_or_default(),
    };
    let permissions = match oauth::delegated(&dev, client, &scope) {
        Ok(p) => p,
        Err(e) => {
            // At the authorize endpoint a missing consent is `consent_required`.
            let e = if e.code == 65001 {
                EntraError {
                    error: "consent_required",
                    ..e
                }
            } else {
                e
            };
            return redirect_error(redirect_uri, &e, state);
        }
    };
    let hint = q.get("login_hint").filter(|h| !h.is_empty());
    let user = hint.and_then(|h| {
        dev.users
            .iter()
            .position(|u| u.username.eq_ignore_ascii_case(h))
    });
    let Some(user) = user else {
        if q.get("prompt").map(String::as_str) == Some("none") {
            return redirect_error(
                redirect_uri,
                &EntraError::new(
                    "login_required",
                    50058,
                    "A silent sign-in request was sent but no user is signed in (the dev issuer signs in the user named by login_hint).",
                ),
                state,
            );
        }
        return sign_in_page(
            ctx,
            tenant,
            q,
            &dev,
            client,
            hint.map(String::as_str),
            endpoint,
        );
    };
    let g = Grant {
        client_id: client.client_id.clone(),
        user,
        permissions,
        nonce: q.get("nonce").cloned(),
    };
    let code = s.grants.issue_code(
        g,
        CodeBinding {
            redirect_uri: redirect_uri.clone(),
            challenge,
        },
    );
    let session = uuid::Uuid::new_v4().to_string();
    let info = dev.users.get(user).map(|u| client_info(u, &dev));
    let mut params = vec![("code", code.as_str())];
    if q.get("client_info").map(String::as_str) == Some("1")
        && let Some(info) = info.as_deref()
    {
        params.push(("client_info", info));
    }
    if let Some(st) = state {
        params.push(("state", st));
    }
    params.push(("session_state", session.as_str()));
    if q.get("response_mode").map(String::as_str) == Some("form_post") {
        return form_post(redirect_uri, &params);
    }
    redirect(redirect_uri, &params)
}

fn form_post(to: &str, params: &[(&str, &str)]) -> Response {
    let mut inputs = String::new();
    for (k, v) in params {
        let _ = write!(
            inputs,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            html_escape(k),
            html_escape(v)
        );
    }
    Html(format!(
        "<!doctype html><title>Working...</title><body onload=\"document.forms[0].submit()\"><form method=\"POST\" action=\"{}\">{inputs}<noscript><button>Continue</button></noscript></form></body>",
        html_escape(to)
    ))
    .into_response()
}

/// The page that lists the dev users: each is a link to this same request with its
/// `login_hint`.
fn sign_in_page(
    ctx: &Ctx,
    tenant: &str,
    q: &Params,
    dev: &Dev,
    client: &DevClient,
    unknown_hint: Option<&str>,
    endpoint: Endpoint,
) -> Response {
    let path = match endpoint {
        Endpoint::V1 => "oauth2/authorize",
        Endpoint::V2 => "oauth2/v2.0/authorize",
    };
    let mut items = String::new();
    for u in &dev.users {
        let mut query: Vec<(&str, &str)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "login_hint")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        query.sort_unstable();
        query.push(("login_hint", u.username.as_str()));
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let href = format!("{}/{tenant}/{path}?{}", ctx.base, qs.join("&"));
        let _ = write!(
            items,
            "<li><a href=\"{}\">{}</a> &lt;{}&gt;</li>",
            html_escape(&href),
            html_escape(&u.name),
            html_escape(&u.username)
        );
    }
    let note = unknown_hint.map_or_else(String::new, |h| {
        format!(
            "<p>No dev user is named {}: pick one below, or add it to <code>[[dev.users]]</code>.</p>",
            html_escape(h)
        )
    });
    Html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Sign in to your account</title><h1>Pick an account</h1><p>{} wants to sign you in (entragate dev issuer, tenant {}).</p>{note}<ul>{items}</ul>",
        html_escape(&client.name),
        html_escape(&dev.tenant_id)
    ))
    .into_response()
}
