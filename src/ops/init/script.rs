//! The text of `entra-app.sh`: the `az` script that creates or updates the registration
//! `entra-app.json` describes, and writes its client ID into the config.

use std::fmt::Write as _;

use super::Plan;
use super::render::{
    ROLES, SCOPE, TENANT_PLACEHOLDER, application, display_name, sign_in_audience,
};
use crate::config::is_guid;

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
