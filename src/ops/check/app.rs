//! `check --app FILE`: an Entra application object against the config, offline.
//!
//! FILE is `az ad app show --id …` output, Microsoft Graph's JSON for an `application` (or a
//! list of one, as `az ad app list` prints it), the portal's manifest (the older Azure AD
//! Graph shape: `accessTokenAcceptedVersion`, `oauth2Permissions`), or `entra-app.json` from
//! `entragate init`. Each mismatch is one [`Item`], with what the user meets (the AADSTS code
//! or the gateway's refusal) and the fix (`az` command or portal blade).

mod audiences;
mod permissions;

use std::collections::BTreeMap;

use serde_json::Value;

use super::Item;
use crate::config::Config;

/// An exposed scope or an app role.
#[derive(Debug, Clone)]
struct Permission {
    id: String,
    value: String,
    enabled: bool,
    /// App roles: `Application`, `User`.
    member_types: Vec<String>,
}

/// What the comparison needs of an application object.
#[derive(Debug, Clone, Default)]
pub struct App {
    app_id: Option<String>,
    identifier_uris: Vec<String>,
    /// `None`: null or absent (v1 tokens).
    version: Option<i64>,
    scopes: Vec<Permission>,
    /// Client ID (lower case) -> the scope IDs it is pre-authorized for.
    pre_authorized: BTreeMap<String, Vec<String>>,
    roles: Vec<Permission>,
    sign_in_audience: Option<String>,
}

impl App {
    /// Reads an application object from JSON text.
    ///
    /// # Errors
    /// Not JSON, not one application object.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
            format!("not JSON ({e}); pass the output of `az ad app show --id <client ID>`")
        })?;
        let v = one(v)?;
        let Value::Object(obj) = &v else {
            return Err(
                "not a JSON object: pass the output of `az ad app show --id <client ID>`".into(),
            );
        };
        let known = [
            "identifierUris",
            "api",
            "appRoles",
            "oauth2Permissions",
            "appId",
        ];
        if !known.iter().any(|k| obj.contains_key(*k)) {
            return Err(
                "not an application object: it has none of identifierUris, api, appRoles, appId"
                    .into(),
            );
        }
        let api = &v["api"];
        // Graph: api.requestedAccessTokenVersion; the portal's manifest: accessTokenAcceptedVersion.
        let version = [
            &api["requestedAccessTokenVersion"],
            &v["accessTokenAcceptedVersion"],
        ]
        .into_iter()
        .find_map(Value::as_i64);
        let scopes = permissions(if api["oauth2PermissionScopes"].is_array() {
            &api["oauth2PermissionScopes"]
        } else {
            &v["oauth2Permissions"]
        });
        let (pre, ids_key) = if api["preAuthorizedApplications"].is_array() {
            (&api["preAuthorizedApplications"], "delegatedPermissionIds")
        } else {
            (&v["preAuthorizedApplications"], "permissionIds")
        };
        let mut pre_authorized: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in pre.as_array().into_iter().flatten() {
            if let Some(id) = a["appId"].as_str() {
                pre_authorized
                    .entry(id.to_ascii_lowercase())
                    .or_default()
                    .extend(
                        strings(&a[ids_key])
                            .into_iter()
                            .map(|s| s.to_ascii_lowercase()),
                    );
            }
        }
        Ok(Self {
            app_id: v["appId"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
            identifier_uris: strings(&v["identifierUris"]),
            version,
            scopes,
            pre_authorized,
            roles: permissions(&v["appRoles"]),
            sign_in_audience: v["signInAudience"].as_str().map(str::to_owned),
        })
    }
}

/// The one application of a Graph list (`{"value": [...]}`) or an `az ad app list` array.
fn one(v: Value) -> Result<Value, String> {
    let list = match v {
        Value::Array(items) => items,
        Value::Object(mut obj) if obj.get("value").is_some_and(Value::is_array) => {
            match obj.remove("value") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => return Ok(other),
    };
    match <[Value; 1]>::try_from(list) {
        Ok([one]) => Ok(one),
        Err(list) if list.is_empty() => {
            Err("an empty list: no application matched (check the az ad app list filter)".into())
        }
        Err(list) => Err(format!(
            "a list of {} applications: pass one (az ad app show --id <client ID>)",
            list.len()
        )),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn permissions(v: &Value) -> Vec<Permission> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| Permission {
            id: p["id"].as_str().unwrap_or_default().to_ascii_lowercase(),
            value: p["value"].as_str().unwrap_or_default().to_owned(),
            enabled: p["isEnabled"].as_bool().unwrap_or(true),
            member_types: strings(&p["allowedMemberTypes"]),
        })
        .collect()
}

/// The comparison: one item per mismatch, and an `ok` line for each part that agrees.
#[must_use]
pub fn items(config: &Config, app: &App, file: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let id = app.app_id.as_deref().unwrap_or("<client ID>");
    audiences::identifier_uris(config, app, id, &mut out);
    audiences::app_id(config, app, file, &mut out);
    audiences::tenants(config, app, id, &mut out);
    permissions::scopes(config, app, &mut out);
    permissions::roles(config, app, &mut out);
    permissions::pre_authorized(config, app, &mut out);
    out
}

#[cfg(test)]
mod tests;
