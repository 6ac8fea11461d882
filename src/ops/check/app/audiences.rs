//! `identifierUris`, `appId`, the token version and `signInAudience` against `[entra]`.

use super::App;
use crate::config::{Config, is_guid};
use crate::ops::check::{Item, Status};

/// An audience or identifier URI as compared: no trailing `/`, lower case.
fn norm(s: &str) -> String {
    s.trim().trim_end_matches('/').to_ascii_lowercase()
}

pub(super) fn identifier_uris(config: &Config, app: &App, id: &str, out: &mut Vec<Item>) {
    let uris: Vec<String> = app.identifier_uris.iter().map(|u| norm(u)).collect();
    let audiences: Vec<&String> = config
        .entra
        .audiences
        .iter()
        .filter(|a| !is_guid(a))
        .collect();
    let before = out.len();
    for a in &audiences {
        if !uris.contains(&norm(a)) {
            let mut all = app.identifier_uris.clone();
            all.push((*a).clone());
            out.push(
                Item::new(
                    "app.identifier_uris",
                    Status::Fail,
                    format!(
                        "entra.audiences lists {a}, but the app's identifierUris are {:?}: Entra issues no token for {a} (AADSTS500011: the resource principal was not found), and Power BI asks for exactly the scheme and host of the URL the user typed",
                        app.identifier_uris
                    ),
                )
                .fix(format!(
                    "az ad app update --id {id} --identifier-uris {} (portal: App registrations -> the API -> Expose an API -> Application ID URI; https only on a verified domain), or take {a} out of entra.audiences",
                    all.join(" ")
                )),
            );
        }
    }
    let v2 = app.version == Some(2);
    for (u, n) in app.identifier_uris.iter().zip(&uris) {
        if !audiences.iter().any(|a| norm(a) == *n) {
            let (status, effect) = if v2 {
                (
                    Status::Warn,
                    "refused as audience_mismatch once requestedAccessTokenVersion is null or 1 (v2 tokens carry the client ID)",
                )
            } else {
                (
                    Status::Fail,
                    "refused: 401 invalid_token, reason audience_mismatch",
                )
            };
            out.push(
                Item::new(
                    "app.identifier_uris",
                    status,
                    format!(
                        "identifierUris has {u}, which entra.audiences does not list: a v1 token requested for it carries aud = {u} and is {effect}"
                    ),
                )
                .fix(format!("Add \"{u}\" to entra.audiences.")),
            );
        }
    }
    if out.len() == before {
        out.push(Item::new(
            "app.identifier_uris",
            Status::Ok,
            format!(
                "identifierUris {:?} = the URI audiences of entra.audiences",
                app.identifier_uris
            ),
        ));
    }
}

pub(super) fn app_id(config: &Config, app: &App, file: &str, out: &mut Vec<Item>) {
    let guids: Vec<String> = config
        .entra
        .audiences
        .iter()
        .filter(|a| is_guid(a))
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let uri_audiences = config.entra.audiences.iter().any(|a| !is_guid(a));
    let version = match app.version {
        None => "null".to_owned(),
        Some(v) => v.to_string(),
    };
    match app.version {
        Some(2) => {}
        None | Some(1) if !uri_audiences => out.push(
            Item::new(
                "app.token_version",
                Status::Fail,
                format!(
                    "requestedAccessTokenVersion is {version}: Entra issues v1 tokens (iss https://sts.windows.net/<tenant>/) whose aud is the Application ID URI {:?}, and entra.audiences lists only client IDs: every token requested by URI is refused (audience_mismatch)",
                    app.identifier_uris
                ),
            )
            .fix(format!(
                "Add the Application ID URI to entra.audiences, or ask for v2 tokens: az ad app update --id {} --set api.requestedAccessTokenVersion=2 (portal: the API -> Manifest)",
                app.app_id.as_deref().unwrap_or("<client ID>")
            )),
        ),
        None | Some(1) => out.push(Item::new(
            "app.token_version",
            Status::Ok,
            format!("requestedAccessTokenVersion is {version}: v1 tokens (iss https://sts.windows.net/<tenant>/, aud = the Application ID URI), which the gateway accepts"),
        )),
        Some(other) => out.push(
            Item::new(
                "app.token_version",
                Status::Fail,
                format!("requestedAccessTokenVersion is {other}: Entra knows only null, 1 and 2"),
            )
            .fix("Set it to 2 (or 1) in the manifest (App registrations -> the API -> Manifest)."),
        ),
    }
    let Some(id) = app.app_id.as_deref() else {
        out.push(
            Item::new(
                "app.app_id",
                Status::Ok,
                format!("{file} has no appId (written before the registration exists): the client ID in entra.audiences is not compared"),
            )
            .fix("Compare the registration itself: az ad app show --id <client ID> > app.json, then check --app app.json."),
        );
        return;
    };
    let line = {
        let mut all: Vec<String> = config.entra.audiences.clone();
        all.push(id.to_owned());
        let quoted: Vec<String> = all.iter().map(|a| format!("\"{a}\"")).collect();
        format!("audiences = [{}]", quoted.join(", "))
    };
    if guids.iter().any(|g| g == id) {
        out.push(Item::new(
            "app.app_id",
            Status::Ok,
            format!("appId {id} is in entra.audiences (the aud of v2 tokens)"),
        ));
    } else if app.version == Some(2) {
        let others = if guids.is_empty() {
            String::new()
        } else {
            format!(
                " (it lists the client ID(s) {}, not this application's)",
                guids.join(", ")
            )
        };
        out.push(
            Item::new(
                "app.app_id",
                Status::Fail,
                format!(
                    "requestedAccessTokenVersion is 2: every token carries aud = the appId {id} (iss https://login.microsoftonline.com/<tenant>/v2.0), which entra.audiences does not list{others}: all are refused (401 invalid_token, audience_mismatch)"
                ),
            )
            .fix(format!("In [entra]: {line}")),
        );
    } else {
        for g in &guids {
            out.push(
                Item::new(
                    "app.app_id",
                    Status::Warn,
                    format!("entra.audiences lists the client ID {g}, but this application's appId is {id}: a token requested for {id} by client ID (or a v2 token, once requestedAccessTokenVersion is 2) is refused"),
                )
                .fix(format!("Replace \"{g}\" with \"{id}\" in entra.audiences if this is the API's registration.")),
            );
        }
    }
}

pub(super) fn tenants(config: &Config, app: &App, id: &str, out: &mut Vec<Item>) {
    let Some(audience) = app.sign_in_audience.as_deref() else {
        return;
    };
    let multi_app = audience != "AzureADMyOrg";
    let entra = &config.entra;
    if entra.is_multi_tenant() && !multi_app {
        out.push(
            Item::new(
                "app.sign_in_audience",
                Status::Fail,
                format!(
                    "signInAudience is AzureADMyOrg (one tenant), but entra.tenant_id is {}: users of the other allowed tenants cannot get a token for this API (the API has no service principal in their tenant: AADSTS500011 or AADSTS50020)",
                    entra.tenant_id
                ),
            )
            .fix(format!("az ad app update --id {id} --sign-in-audience AzureADMultipleOrgs (portal: the API -> Authentication -> Supported account types), then an admin of each tenant consents")),
        );
    } else if !entra.is_multi_tenant() && multi_app {
        out.push(
            Item::new(
                "app.sign_in_audience",
                Status::Warn,
                format!(
                    "signInAudience is {audience}: users of any tenant may consent and get tokens for this API, and the gateway (entra.tenant_id {}) refuses them (401 invalid_token, issuer_mismatch)",
                    entra.tenant_id
                ),
            )
            .fix(format!("az ad app update --id {id} --sign-in-audience AzureADMyOrg, or set entra.tenant_id = \"organizations\" with entra.allowed_tenants")),
        );
    } else {
        out.push(Item::new(
            "app.sign_in_audience",
            Status::Ok,
            format!(
                "signInAudience {audience} fits entra.tenant_id {}",
                entra.tenant_id
            ),
        ));
    }
}
