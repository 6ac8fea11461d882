//! The text of `entragate.toml` and `entra-app.json`, and what `entra-app.sh` shares with
//! them. One [`Plan`] feeds all three files, so the scope and role IDs, the Application ID
//! URI and the clients agree between them.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Plan;

/// The scope Power Query asks for when none is given (AADSTS650053 when it is missing).
pub const SCOPE: &str = "user_impersonation";

/// App roles for service accounts (client-credentials tokens carry them in `roles`): value,
/// display name, description. The routes of the config below require them.
pub const ROLES: [(&str, &str, &str); 3] = [
    (
        "AQL.Read.All",
        "Run AQL queries",
        "Lets a service account run AQL queries (stored and ad hoc) on the CDR.",
    ),
    (
        "EHR.Read.All",
        "Read EHRs and compositions",
        "Lets a service account read every EHR and composition in the CDR.",
    ),
    (
        "CDR.Write.All",
        "Write EHRs, compositions and templates",
        "Lets a service account create and change EHRs, compositions, contributions and templates in the CDR.",
    ),
];

/// The placeholder `entra-app.sh` replaces with the signed-in tenant when `--tenant` is not
/// given (until then `check` names `entra.tenant_id`).
pub const TENANT_PLACEHOLDER: &str = "<entra-app.sh writes the tenant ID here>";

pub(super) fn host_of(plan: &Plan) -> &str {
    plan.app_id_uri
        .split_once("://")
        .map_or(plan.app_id_uri.as_str(), |(_, h)| h)
}

pub(super) fn display_name(plan: &Plan) -> String {
    format!("entragate {}", host_of(plan))
}

pub(super) fn sign_in_audience(plan: &Plan) -> &'static str {
    if plan.multi_tenant() {
        "AzureADMultipleOrgs"
    } else {
        "AzureADMyOrg"
    }
}

/// `entragate.toml`.
pub fn config(plan: &Plan) -> String {
    let uri = &plan.app_id_uri;
    let mut o = String::new();
    let fills = match plan.tenant.as_deref() {
        None => ", and the tenant ID",
        Some(_) if plan.multi_tenant() => ", and your tenant to allowed_tenants",
        Some(_) => "",
    };
    let _ = writeln!(
        o,
        "# entragate in front of {uri}, written by `entragate init` (docs/onboarding.md).
#   1. bash entra-app.sh                          creates or updates the Entra app registration
#                                                 and writes its client ID below{fills}
#   2. entragate check --config entragate.toml    validates, fetches the tenant's keys
#   3. entragate serve --config entragate.toml
# Every key and its default: config/entragate.example.toml and docs/configuration.md.

[server]
listen = \"0.0.0.0:8443\"           # what the ingress or load balancer sends traffic to
admin_listen = \"127.0.0.1:9090\"   # /healthz /readyz /metrics"
    );
    if plan.https {
        let _ = writeln!(
            o,
            "public_url = \"{uri}\"   # what clients call; `check` compares it with the audiences"
        );
    }
    let _ = writeln!(
        o,
        "
[upstream]
url = \"http://127.0.0.1:8080\"     # EHRbase (here in the same pod); it serves /ehrbase/...
# The client's token goes on to EHRbase as it came. To keep EHRbase's Basic authentication
# instead, so that only the gateway knows the password:
#   authorization = \"basic\"
#   basic_user = \"ehrbase-user\"
#   basic_password_file = \"/run/secrets/ehrbase-password\"
authorization = \"forward\"

[entra]"
    );
    match plan.tenant.as_deref() {
        None => {
            let _ = writeln!(
                o,
                "tenant_id = \"{TENANT_PLACEHOLDER}\"   # Directory (tenant) ID"
            );
        }
        Some(t) if plan.multi_tenant() => {
            let _ = writeln!(
                o,
                "tenant_id = \"{t}\"   # tokens of several tenants; the registration is multi-tenant
# TODO: the Directory (tenant) IDs of the organisations that may call; entra-app.sh adds the
# tenant it runs in. The gateway refuses to start while the list is empty.
allowed_tenants = []"
            );
        }
        Some(t) => {
            let _ = writeln!(o, "tenant_id = \"{t}\"   # Directory (tenant) ID");
        }
    }
    let mut ids: Vec<String> = plan
        .pre_authorized()
        .iter()
        .map(|(id, name)| format!("#   \"{id}\",  # {name}"))
        .collect();
    if ids.is_empty() {
        ids.push("#   \"<client ID>\",".to_owned());
    }
    let _ = writeln!(
        o,
        "# The token's aud must be one of these: the Application ID URI (v1 tokens) and the API's
# Application (client) ID (v2 tokens, which the registration asks for). The client ID exists
# once the registration does: entra-app.sh adds it here.
audiences = [\"{uri}\"]
# Empty: any client application that can get a token for this API may call. To admit only the
# clients entra-app.sh pre-authorizes (and your service accounts' client IDs):
# allowed_client_ids = [
{ids}
# ]
allowed_client_ids = []",
        ids = ids.join("\n")
    );
    let _ = write!(
        o,
        "
# Route rules (docs/configuration.md, route rules): the first rule whose path and method match
# decides; a request no rule covers needs a valid token for this API and nothing more.
# Users (Power BI, Posit Connect viewers) hold the delegated scope {SCOPE} in scp; service
# accounts (client credentials) hold the app roles an admin granted them in roles.

# EHRbase's status endpoint: public (a token that is sent anyway must still be valid).
[[routes]]
path = \"/ehrbase/rest/status\"
methods = [\"GET\", \"HEAD\"]
anonymous = true

# AQL: GET /query/aql?q=... (what Power BI sends), POST /query/aql, stored queries.
[[routes]]
path = \"/ehrbase/rest/openehr/v1/query\"
methods = [\"GET\", \"HEAD\", \"POST\"]
scopes = [\"{SCOPE}\"]
roles = [\"AQL.Read.All\"]

# Writes (EHRs, compositions, contributions): service accounts with CDR.Write.All only.
[[routes]]
path = \"/ehrbase/rest/openehr/v1/ehr\"
methods = [\"POST\", \"PUT\", \"DELETE\"]
roles = [\"CDR.Write.All\"]

# Uploading and deleting templates and stored queries: the same role.
[[routes]]
path = \"/ehrbase/rest/openehr/v1/definition\"
methods = [\"POST\", \"PUT\", \"DELETE\"]
roles = [\"CDR.Write.All\"]

# Reading EHRs and compositions.
[[routes]]
path = \"/ehrbase/rest/openehr/v1/ehr\"
methods = [\"GET\", \"HEAD\"]
scopes = [\"{SCOPE}\"]
roles = [\"EHR.Read.All\"]
"
    );
    o
}

/// The Graph `application` object; `pre_authorize` false leaves the pre-authorizations
/// empty (the first of the script's two requests).
pub(super) fn application(plan: &Plan, pre_authorize: bool) -> Value {
    let host = host_of(plan);
    let scope = json!({
        "id": plan.scope_id,
        "value": SCOPE,
        "type": "User",
        "isEnabled": true,
        "adminConsentDisplayName": format!("Access {host}"),
        "adminConsentDescription": format!("Allows the app to call {host} (the CDR API behind entragate) on behalf of the signed-in user."),
        "userConsentDisplayName": format!("Access {host}"),
        "userConsentDescription": format!("Allows the app to call {host} on your behalf, with your permissions."),
    });
    let pre: Vec<Value> = if pre_authorize {
        plan.pre_authorized()
            .iter()
            .map(|(id, _)| json!({ "appId": id, "delegatedPermissionIds": [plan.scope_id] }))
            .collect()
    } else {
        Vec::new()
    };
    let roles: Vec<Value> = ROLES
        .iter()
        .zip(&plan.role_ids)
        .map(|((value, name, about), id)| {
            json!({
                "id": id,
                "value": value,
                "displayName": name,
                "description": about,
                "allowedMemberTypes": ["Application"],
                "isEnabled": true,
            })
        })
        .collect();
    json!({
        "displayName": display_name(plan),
        "signInAudience": sign_in_audience(plan),
        "identifierUris": [plan.app_id_uri],
        "api": {
            "requestedAccessTokenVersion": 2,
            "oauth2PermissionScopes": [scope],
            "preAuthorizedApplications": pre,
        },
        "appRoles": roles,
    })
}

/// `entra-app.json`.
pub fn manifest(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(&application(plan, true)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn plan(tenant: Option<&str>) -> Plan {
        Plan::new(
            "https://cdr.example.org",
            tenant,
            "power-bi,power-platform,posit-connect",
        )
        .expect("plan")
    }

    fn load(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::load(text, &[], &|_| Err(std::io::ErrorKind::NotFound.into()))
    }

    #[test]
    fn the_config_loads_with_a_tenant_and_names_the_tenant_until_the_script_fills_it() {
        let c = load(&config(&plan(Some("72f988bf-86f1-41af-91ab-2d7cd011db47")))).expect("loads");
        assert_eq!(c.entra.audiences, ["https://cdr.example.org"]);
        assert_eq!(
            c.server.public_url.as_deref(),
            Some("https://cdr.example.org")
        );
        assert_eq!(c.routes.len(), 5);
        let e = load(&config(&plan(None))).expect_err("placeholder");
        assert!(e.problems.iter().any(|p| p.key == "entra.tenant_id"), "{e}");
        let e = load(&config(&plan(Some("organizations")))).expect_err("empty list");
        assert!(
            e.problems.iter().any(|p| p.key == "entra.allowed_tenants"),
            "{e}"
        );
    }

    #[test]
    fn the_manifest_pre_authorizes_the_scope_for_each_client_once() {
        let p = plan(None);
        let m: Value = serde_json::from_str(&manifest(&p)).expect("json");
        assert_eq!(m["identifierUris"], json!(["https://cdr.example.org"]));
        assert_eq!(m["api"]["requestedAccessTokenVersion"], 2);
        assert_eq!(m["api"]["oauth2PermissionScopes"][0]["id"], p.scope_id);
        let pre = m["api"]["preAuthorizedApplications"]
            .as_array()
            .expect("array");
        assert_eq!(pre.len(), 3, "{pre:?}");
        assert!(
            pre.iter()
                .all(|a| a["delegatedPermissionIds"] == json!([p.scope_id]))
        );
        assert_eq!(m["appRoles"].as_array().map(Vec::len), Some(3));
        let script = super::super::script::script(&p);
        assert!(script.contains(&p.scope_id) && script.contains(&p.role_ids[2]));
        assert!(script.contains("Posit Connect"));
        assert!(script.contains(TENANT_PLACEHOLDER));
    }
}
