//! The text of `init`'s three files. One [`Plan`] feeds all three, so the scope and role
//! IDs, the Application ID URI and the clients agree between them.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Plan;
use crate::config::is_guid;

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

fn host_of(plan: &Plan) -> &str {
    plan.app_id_uri
        .split_once("://")
        .map_or(plan.app_id_uri.as_str(), |(_, h)| h)
}

fn display_name(plan: &Plan) -> String {
    format!("entragate {}", host_of(plan))
}

fn sign_in_audience(plan: &Plan) -> &'static str {
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
fn application(plan: &Plan, pre_authorize: bool) -> Value {
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

/// Single-quoted for bash (the values here never hold a quote, but stay safe).
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `entra-app.sh`.
#[allow(clippy::too_many_lines)]
pub fn script(plan: &Plan) -> String {
    let uri = &plan.app_id_uri;
    let clients: Vec<String> = plan
        .pre_authorized()
        .iter()
        .map(|(id, name)| format!("#                                    {id}  {name}"))
        .collect();
    let clients = if clients.is_empty() {
        "#                                    (none: no Microsoft client was chosen)".to_owned()
    } else {
        clients.join("\n")
    };
    let tenant = plan.tenant.as_deref().unwrap_or("");
    let role_values: Vec<&str> = ROLES.iter().map(|r| r.0).collect();
    let role_ids: Vec<String> = plan.role_ids.iter().map(|id| sh(id)).collect();
    let first = serde_json::to_string_pretty(&application(plan, false)).unwrap_or_default();
    let mut o = format!(
        r#"#!/usr/bin/env bash
# Creates or updates the Entra app registration of the API {uri} and its service
# principal. Written by `entragate init`; safe to run again: it updates the registration it
# finds (by Application ID URI, then by name) instead of creating a second one.
#
#   az login{login_tenant}      an account that may create app registrations
#   bash entra-app.sh
#
# What it sets (entra-app.json beside it is the same registration as a Graph application object):
#   identifierUris                   {uri}: Power Query asks Entra for a token whose resource
#                                    is the scheme and host of the URL the user typed
#                                    (AADSTS500011 otherwise); https only on a verified domain
#   api.oauth2PermissionScopes       {SCOPE}, with admin and user consent texts: Power
#                                    Query asks for it when no scope is given (AADSTS650053)
#   api.preAuthorizedApplications    the clients that may ask for it without a consent prompt
#                                    (AADSTS650057 for Power Query's clients otherwise):
{clients}
#   api.requestedAccessTokenVersion  2: Entra issues v2 tokens (aud = the client ID, iss =
#                                    https://login.microsoftonline.com/<tenant>/v2.0). null or 1
#                                    means v1 tokens (aud = the Application ID URI, iss =
#                                    https://sts.windows.net/<tenant>/), which is what a
#                                    registration made in the portal gives Power BI by default.
#                                    entragate accepts both while entra.audiences lists both.
#   appRoles                         {roles}: for service accounts
#                                    (client-credentials tokens carry them in roles)
# Then it writes the client ID into entra.audiences of entragate.toml (the aud of v2 tokens)
# and prints the values to paste into Power BI, Posit Connect and the gateway.
#
# Environment: ENTRAGATE_TOML (the config to update; default: entragate.toml beside this
# script), APP_NAME (the registration's display name), GRAPH_URL (another cloud's Graph).
set -euo pipefail

HERE=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
URI={uri_q}
TENANT={tenant_q}
SIGN_IN_AUDIENCE={audience}
NAME=${{APP_NAME:-{name}}}
MANIFEST="$HERE/entra-app.json"
CONFIG=${{ENTRAGATE_TOML:-"$HERE/entragate.toml"}}
GRAPH=${{GRAPH_URL:-https://graph.microsoft.com}}
SCOPE={scope_q}
SCOPE_ID={scope_id}
ROLES=({role_values})
ROLE_IDS=({role_ids})

say() {{ printf '%s\n' "$*"; }}
die() {{
    printf 'entra-app.sh: %s\n' "$*" >&2
    exit 1
}}

command -v az >/dev/null 2>&1 || die "needs the Azure CLI (az): https://learn.microsoft.com/cli/azure/install-azure-cli"
[[ -f "$MANIFEST" ]] || die "$MANIFEST is missing (entragate init writes it beside this script)"

SIGNED_IN=$(az account show --query tenantId -o tsv) || die "not signed in: run az login"
if [[ "$TENANT" =~ ^[0-9a-f-]{{36}}$ && "$SIGNED_IN" != "$TENANT" ]]; then
    die "az is signed in to tenant $SIGNED_IN, but the gateway is for tenant $TENANT: run az login --tenant $TENANT"
fi

# 1. Find the registration, or create it.
APP_ID=$(az ad app list --identifier-uri "$URI" --query '[0].appId' -o tsv)
if [[ -z "$APP_ID" ]]; then
    # --display-name matches names that start with it: take the exact one.
    APP_ID=$(az ad app list --display-name "$NAME" --query "[?displayName=='$NAME'].appId | [0]" -o tsv)
fi
if [[ -z "$APP_ID" ]]; then
    APP_ID=$(az ad app create --display-name "$NAME" --sign-in-audience "$SIGN_IN_AUDIENCE" --query appId -o tsv)
    say "created the app registration \"$NAME\": client ID $APP_ID"
else
    say "updating the app registration $APP_ID"
fi
OBJECT_ID=$(az ad app show --id "$APP_ID" --query id -o tsv)

BODY=$(mktemp)
FIRST=$(mktemp)
trap 'rm -f "$BODY" "$FIRST"' EXIT
cp "$MANIFEST" "$BODY"
# entra-app.json without the pre-authorizations (see step 3).
cat >"$FIRST" <<'JSON'
{first}
JSON

# 2. Keep the IDs of the scope and roles the registration already has: Graph refuses to
#    change the ID of an enabled scope or role ("cannot be deleted or updated unless
#    disabled first"). Prints the ID in use.
keep_id() {{
    local have
    have=$(az ad app show --id "$APP_ID" --query "$1[?value=='$2'].id | [0]" -o tsv)
    if [[ -n "$have" && "$have" != "$3" ]]; then
        for f in "$BODY" "$FIRST"; do
            sed "s/$3/$have/g" "$f" >"$f.new" && mv "$f.new" "$f"
        done
        printf '%s\n' "$have"
    else
        printf '%s\n' "$3"
    fi
}}
SCOPE_ID=$(keep_id api.oauth2PermissionScopes "$SCOPE" "$SCOPE_ID")
for i in "${{!ROLES[@]}}"; do
    ROLE_IDS[i]=$(keep_id appRoles "${{ROLES[i]}}" "${{ROLE_IDS[i]}}")
done

# 3. Graph refuses to pre-authorize a scope created in the same request: first the URI,
#    scope, roles and token version, then the whole object.
patch() {{
    az rest --method PATCH --uri "$GRAPH/v1.0/applications/$OBJECT_ID" \
        --headers 'Content-Type=application/json' --body "@$1" >/dev/null
}}
patch "$FIRST" || die "Graph refused the registration. An https Application ID URI must be on a verified domain of the tenant (Entra admin center -> Domain names); a tenant's policy may also require api://$APP_ID"
patch "$BODY" || die "Graph refused the pre-authorizations (api.preAuthorizedApplications in $MANIFEST)"
say "set identifierUris, the $SCOPE scope, ${{#ROLES[@]}} app roles, the pre-authorized clients and requestedAccessTokenVersion 2"

# 4. The service principal (Enterprise applications): tokens are issued for it.
if ! az ad sp show --id "$APP_ID" >/dev/null 2>&1; then
    az ad sp create --id "$APP_ID" >/dev/null
    say "created the service principal"
fi

# 5. The gateway's config: v2 tokens carry the client ID as aud.
LINE="audiences = [\"$URI\", \"$APP_ID\"]"
if [[ ! -f "$CONFIG" ]]; then
    say "no $CONFIG: add to the [entra] section of your config: $LINE"
elif grep -q "\"$APP_ID\"" "$CONFIG"; then
    say "$CONFIG already lists $APP_ID in entra.audiences"
elif grep -q "^audiences = \[\"$URI\"\]" "$CONFIG"; then
    sed "s|^audiences = \[\"$URI\"\]|$LINE|" "$CONFIG" >"$CONFIG.new" && mv "$CONFIG.new" "$CONFIG"
    say "wrote $APP_ID into entra.audiences of $CONFIG"
else
    say "add $APP_ID to entra.audiences of $CONFIG: $LINE"
fi
"#,
        login_tenant = if is_guid(tenant) {
            format!(" --tenant {tenant}")
        } else {
            String::new()
        },
        roles = role_values.join(", "),
        uri_q = sh(uri),
        tenant_q = sh(tenant),
        audience = sign_in_audience(plan),
        name = sh(&display_name(plan)),
        scope_q = sh(SCOPE),
        scope_id = sh(&plan.scope_id),
        role_values = role_values.join(" "),
        role_ids = role_ids.join(" "),
    );
    if plan.tenant.is_none() {
        let _ = write!(
            o,
            r#"if [[ -f "$CONFIG" ]] && grep -q '^tenant_id = "{TENANT_PLACEHOLDER}"' "$CONFIG"; then
    sed 's|^tenant_id = "{TENANT_PLACEHOLDER}"|tenant_id = "'"$SIGNED_IN"'"|' "$CONFIG" >"$CONFIG.new" && mv "$CONFIG.new" "$CONFIG"
    say "wrote the tenant ID $SIGNED_IN into entra.tenant_id of $CONFIG"
fi
"#
        );
    }
    if plan.multi_tenant() {
        o.push_str(
            r#"if [[ -f "$CONFIG" ]] && grep -q '^allowed_tenants = \[\]' "$CONFIG"; then
    sed 's|^allowed_tenants = \[\]|allowed_tenants = ["'"$SIGNED_IN"'"]|' "$CONFIG" >"$CONFIG.new" && mv "$CONFIG.new" "$CONFIG"
    say "added this tenant ($SIGNED_IN) to entra.allowed_tenants of $CONFIG: list the other tenants that may call there"
fi
"#,
        );
    }
    o.push_str(
        r#"
# 6. What to paste where.
cat <<EOF

App registration "$NAME"
  Application (client) ID   $APP_ID
  Application ID URI        $URI
  Directory (tenant) ID     $SIGNED_IN
  scope                     $URI/$SCOPE   (id $SCOPE_ID)
  app roles                 ${ROLES[*]}
Gateway ([entra] of $CONFIG):
  tenant_id = "$SIGNED_IN"
  $LINE
Check the registration against the config:
  az ad app show --id $APP_ID > app.json && entragate check --config $CONFIG --app app.json
Grant a service account (its own app registration) an app role, e.g. ${ROLES[0]}:
  az ad app permission add --id <its client ID> --api $APP_ID --api-permissions ${ROLE_IDS[0]}=Role
  az ad app permission admin-consent --id <its client ID>
EOF
"#,
    );
    if plan.https {
        o.push_str(
            r#"cat <<EOF
Power BI Desktop: Get Data -> Web, URL $URI/ehrbase/rest/openehr/v1/query/aql?q=SELECT%20e/ehr_id/value%20FROM%20EHR%20e,
  then Organizational account -> Sign in -> Connect. Power BI service: the semantic model's data
  source credentials -> OAuth2, organizational account (scheduled refresh).
EOF
"#,
        );
    }
    if plan.has("posit-connect") {
        o.push_str(
            r#"cat <<EOF
Posit Connect signs in with its own app registration (Connect's OAuth integration for
Microsoft Entra ID); give that registration this API:
  viewer integration (users):            scopes  $URI/$SCOPE offline_access
  service-account integration (no user): scopes  $URI/.default, with an app role granted as above
  without a consent prompt for users:    az ad app permission add --id <Connect's client ID> --api $APP_ID --api-permissions $SCOPE_ID=Scope
                                         az ad app permission grant --id <Connect's client ID> --api $APP_ID --scope $SCOPE
EOF
"#,
        );
    }
    o
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
        let script = script(&p);
        assert!(script.contains(&p.scope_id) && script.contains(&p.role_ids[2]));
        assert!(script.contains("Posit Connect"));
        assert!(script.contains(TENANT_PLACEHOLDER));
    }
}
