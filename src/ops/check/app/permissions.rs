//! Exposed scopes, app roles and pre-authorized clients against what the routes require.

use std::collections::BTreeMap;

use super::App;
use crate::config::Config;
use crate::ops::check::{Item, Status};
use crate::ops::client_name;

/// "route /a needs" or "routes /a, /b need": the routes (by path) that name `value` in their
/// scopes / roles.
fn routes_needing(config: &Config, value: &str, roles: bool) -> String {
    let paths = route_paths(config, value, roles);
    if paths.len() == 1 {
        format!("route {} needs", paths[0])
    } else {
        format!("routes {} need", paths.join(", "))
    }
}

fn route_paths<'a>(config: &'a Config, value: &str, roles: bool) -> Vec<&'a str> {
    let mut paths: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| {
            let list = if roles { &r.roles } else { &r.scopes };
            list.iter().any(|v| v == value)
        })
        .map(|r| r.path.as_str())
        .collect();
    paths.dedup();
    paths
}

pub(super) fn scopes(config: &Config, app: &App, out: &mut Vec<Item>) {
    let mut needed: Vec<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.scopes.iter().map(String::as_str))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let before = out.len();
    for s in &needed {
        let paths = routes_needing(config, s, false);
        match app.scopes.iter().find(|p| p.value == *s) {
            Some(p) if p.enabled => {}
            Some(_) => out.push(
                Item::new(
                    "app.scopes",
                    Status::Fail,
                    format!("{paths} the scope {s}, which the app exposes disabled: no token carries it, and users get 403 insufficient_scope (scope_missing) there"),
                )
                .fix(format!("Enable {s}: App registrations -> the API -> Expose an API -> the scope -> State: Enabled (or isEnabled true in entra-app.json, then bash entra-app.sh)")),
            ),
            None => out.push(
                Item::new(
                    "app.scopes",
                    Status::Fail,
                    format!("{paths} the scope {s}, which the app does not expose: a client asking for it gets AADSTS650053 (the scope does not exist on the resource), and users get 403 insufficient_scope (scope_missing) there"),
                )
                .fix(format!("Expose it: App registrations -> the API -> Expose an API -> Add a scope -> {s} (or add it to api.oauth2PermissionScopes in entra-app.json with a new id, e.g. from uuidgen, then bash entra-app.sh)")),
            ),
        }
    }
    if !app
        .scopes
        .iter()
        .any(|p| p.enabled && p.value == "user_impersonation")
        && !needed.contains(&"user_impersonation")
    {
        out.push(
            Item::new(
                "app.scopes",
                Status::Warn,
                "the app exposes no user_impersonation scope: Power Query asks for it when signing in to this API (AADSTS650053)",
            )
            .fix("App registrations -> the API -> Expose an API -> Add a scope -> user_impersonation, admins and users, with consent texts"),
        );
    }
    if out.len() == before {
        out.push(Item::new(
            "app.scopes",
            Status::Ok,
            format!(
                "every scope the routes need is exposed ({})",
                needed.join(", ")
            ),
        ));
    }
}

pub(super) fn roles(config: &Config, app: &App, out: &mut Vec<Item>) {
    let mut needed: Vec<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.roles.iter().map(String::as_str))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let before = out.len();
    for r in &needed {
        let paths = routes_needing(config, r, true);
        match app.roles.iter().find(|p| p.value == *r) {
            Some(p) if !p.enabled => out.push(
                Item::new(
                    "app.roles",
                    Status::Fail,
                    format!("{paths} the app role {r}, which the app defines disabled: no token carries it, and service accounts get 403 insufficient_scope (role_missing) there"),
                )
                .fix(format!("Enable {r}: App registrations -> the API -> App roles -> {r} -> Enable this app role")),
            ),
            Some(p) if !p.member_types.is_empty() && !p.member_types.iter().any(|t| t == "Application") => out.push(
                Item::new(
                    "app.roles",
                    Status::Warn,
                    format!("{paths} the app role {r}, which only users can be assigned (allowedMemberTypes {:?}): service accounts (client credentials) cannot be granted it", p.member_types),
                )
                .fix(format!("App registrations -> the API -> App roles -> {r} -> Allowed member types: Both (Users/Groups + Applications)")),
            ),
            Some(_) => {}
            None => out.push(
                Item::new(
                    "app.roles",
                    Status::Fail,
                    format!("{paths} the app role {r}, which the app does not define: no service account can be granted it (a client asking for .default gets a token without it), so they get 403 insufficient_scope (role_missing) there"),
                )
                .fix(format!("Define it: App registrations -> the API -> App roles -> Create app role -> value {r}, Allowed member types: Applications (or add it to appRoles in entra-app.json with a new id, then bash entra-app.sh); then grant it: az ad app permission add --id <service account's client ID> --api <this API's client ID> --api-permissions <role id>=Role")),
            ),
        }
    }
    if out.len() == before {
        out.push(Item::new(
            "app.roles",
            Status::Ok,
            if needed.is_empty() {
                "no route needs an app role".to_owned()
            } else {
                format!(
                    "every app role the routes need is defined ({})",
                    needed.join(", ")
                )
            },
        ));
    }
}

pub(super) fn pre_authorized(config: &Config, app: &App, out: &mut Vec<Item>) {
    let before = out.len();
    let scope_value = |id: &str| {
        app.scopes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.value.clone())
    };
    let fix_for = |c: &str, scopes: &str| {
        format!(
            "Pre-authorize it: App registrations -> the API -> Expose an API -> Add a client application -> {c}, with {scopes} ticked (or add {{\"appId\": \"{c}\", \"delegatedPermissionIds\": [<scope id>]}} to api.preAuthorizedApplications in entra-app.json, then bash entra-app.sh)"
        )
    };
    // Clients the route rules admit, with the routes and the scopes there; app-only routes
    // (roles and no scopes) are left out: client credentials need no pre-authorization.
    // Microsoft's clients in entra.allowed_client_ids sign users in too (they have no client
    // credentials of ours), so they count as well.
    let mut admitted: BTreeMap<String, (Vec<String>, Vec<&str>)> = BTreeMap::new();
    for r in &config.routes {
        if r.scopes.is_empty() && !r.roles.is_empty() {
            continue;
        }
        for c in &r.clients {
            let e = admitted.entry(c.to_ascii_lowercase()).or_default();
            e.0.push(format!("route {}", r.path));
            e.1.extend(r.scopes.iter().map(String::as_str));
        }
    }
    for c in &config.entra.allowed_client_ids {
        if client_name(c).is_some() {
            let e = admitted.entry(c.to_ascii_lowercase()).or_default();
            e.0.push("entra.allowed_client_ids".to_owned());
        }
    }
    for (c, (paths, scopes)) in &mut admitted {
        paths.dedup();
        scopes.sort_unstable();
        scopes.dedup();
        let name = client_name(c)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let microsoft = client_name(c).is_some();
        let wanted = if scopes.is_empty() {
            "user_impersonation".to_owned()
        } else {
            scopes.join(" or ")
        };
        match app.pre_authorized.get(c) {
            None => {
                let effect = if microsoft {
                    "Microsoft's client cannot ask users for consent to this API, so sign-in fails with AADSTS650057"
                } else {
                    "its users get a consent prompt, or AADSTS65001 where user consent is turned off"
                };
                out.push(
                    Item::new(
                        "app.pre_authorized",
                        if microsoft { Status::Fail } else { Status::Warn },
                        format!(
                            "{} admits the client {c}{name}, which the app does not pre-authorize: {effect}",
                            paths.join(", ")
                        ),
                    )
                    .fix(fix_for(c, &wanted)),
                );
            }
            Some(ids) if !scopes.is_empty() => {
                let granted: Vec<String> = ids.iter().filter_map(|id| scope_value(id)).collect();
                let exposed: Vec<&&str> = scopes
                    .iter()
                    .filter(|s| app.scopes.iter().any(|p| p.value == **s))
                    .collect();
                if !exposed.is_empty() && !scopes.iter().any(|s| granted.iter().any(|g| g == s)) {
                    out.push(
                        Item::new(
                            "app.pre_authorized",
                            Status::Warn,
                            format!(
                                "the client {c}{name} is pre-authorized for [{}] only, and {} needs {wanted}: its token's scp lacks it (403 insufficient_scope) unless users consent to it",
                                granted.join(" "),
                                paths.join(", ")
                            ),
                        )
                        .fix(fix_for(c, &wanted)),
                    );
                }
            }
            Some(_) => {}
        }
    }
    for (c, ids) in &app.pre_authorized {
        for id in ids {
            if scope_value(id).is_none() {
                out.push(
                    Item::new(
                        "app.pre_authorized",
                        Status::Fail,
                        format!("the pre-authorization of {c} names the scope id {id}, which the app does not expose"),
                    )
                    .fix("Use the id of an exposed scope in api.preAuthorizedApplications (Graph refuses an unknown one)."),
                );
            }
        }
        let allowed = &config.entra.allowed_client_ids;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == c) {
            let name = client_name(c)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            out.push(
                Item::new(
                    "app.pre_authorized",
                    Status::Warn,
                    format!("the app pre-authorizes {c}{name}, which entra.allowed_client_ids does not list: its tokens are refused (401 invalid_token, client_not_allowed)"),
                )
                .fix(format!("Add \"{c}\" to entra.allowed_client_ids, or remove its pre-authorization.")),
            );
        }
    }
    if out.len() == before {
        let names: Vec<String> = app
            .pre_authorized
            .keys()
            .map(|c| match client_name(c) {
                Some(n) => format!("{c} ({n})"),
                None => c.clone(),
            })
            .collect();
        out.push(Item::new(
            "app.pre_authorized",
            Status::Ok,
            format!(
                "pre-authorized clients agree with the route rules and entra.allowed_client_ids: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
}
