use super::*;
use crate::ops::check::Status;

const API: &str = "11111111-1111-1111-1111-111111111111";
const PQ: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const SCOPE_ID: &str = "33333333-3333-3333-3333-333333333333";

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[entra]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
audiences = ["https://cdr.example.org", "{API}"]
{extra}

[[routes]]
path = "/q"
scopes = ["user_impersonation"]
roles = ["AQL.Read.All"]
clients = ["{PQ}"]
"#
    );
    Config::load(&text, &[], &|_| Err(std::io::ErrorKind::NotFound.into())).expect("config")
}

fn graph() -> Value {
    serde_json::json!({
        "appId": API,
        "signInAudience": "AzureADMyOrg",
        "identifierUris": ["https://cdr.example.org/"],
        "api": {
            "requestedAccessTokenVersion": 2,
            "oauth2PermissionScopes": [{"id": SCOPE_ID, "value": "user_impersonation", "isEnabled": true}],
            "preAuthorizedApplications": [{"appId": PQ, "delegatedPermissionIds": [SCOPE_ID]}]
        },
        "appRoles": [{"id": "44444444-4444-4444-4444-444444444444", "value": "AQL.Read.All", "isEnabled": true, "allowedMemberTypes": ["Application"]}]
    })
}

fn findings(c: &Config, v: &Value) -> Vec<Item> {
    let app = App::parse(&v.to_string()).expect("app");
    items(c, &app, "app.json")
        .into_iter()
        .filter(|i| i.status != Status::Ok)
        .collect()
}

#[test]
fn an_agreeing_application_has_no_findings_in_either_shape() {
    let c = config("");
    assert!(
        findings(&c, &graph()).is_empty(),
        "{:?}",
        findings(&c, &graph())
    );
    // As `az ad app list` prints it, and the portal's older manifest shape.
    assert!(findings(&c, &serde_json::json!([graph()])).is_empty());
    let legacy = serde_json::json!({
        "appId": API,
        "signInAudience": "AzureADMyOrg",
        "identifierUris": ["https://cdr.example.org"],
        "accessTokenAcceptedVersion": 2,
        "oauth2Permissions": [{"id": SCOPE_ID, "value": "user_impersonation", "isEnabled": true}],
        "preAuthorizedApplications": [{"appId": PQ, "permissionIds": [SCOPE_ID]}],
        "appRoles": [{"id": "4", "value": "AQL.Read.All", "isEnabled": true, "allowedMemberTypes": ["Application"]}]
    });
    assert!(
        findings(&c, &legacy).is_empty(),
        "{:?}",
        findings(&c, &legacy)
    );
}

#[test]
fn each_fault_is_one_named_finding() {
    let c = config("");
    let mut v = graph();
    v["api"]["requestedAccessTokenVersion"] = Value::Null;
    v["appId"] = "55555555-5555-5555-5555-555555555555".into();
    let f = findings(&c, &v);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, "app.app_id");
    assert_eq!(f[0].status, Status::Warn);

    let mut v = graph();
    v["appId"] = "55555555-5555-5555-5555-555555555555".into();
    let f = findings(&c, &v);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("audience_mismatch") && f[0].fix.contains("55555555"));

    let mut v = graph();
    v["api"]["preAuthorizedApplications"] = serde_json::json!([]);
    v["appRoles"] = serde_json::json!([]);
    let f = findings(&c, &v);
    let ids: Vec<&str> = f.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["app.roles", "app.pre_authorized"], "{f:?}");
    assert!(f[0].message.contains("AQL.Read.All"));
    assert!(f[1].message.contains("AADSTS650057") && f[1].message.contains(PQ));
}

#[test]
fn v1_tokens_need_the_application_id_uri_among_the_audiences() {
    let text = format!(
        "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"{API}\"]\n"
    );
    let c =
        Config::load(&text, &[], &|_| Err(std::io::ErrorKind::NotFound.into())).expect("config");
    let mut v = graph();
    v["identifierUris"] = serde_json::json!([]);
    v["api"]["requestedAccessTokenVersion"] = Value::Null;
    let f = findings(&c, &v);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].id, "app.token_version");
    assert!(
        f[0].fix.contains("api.requestedAccessTokenVersion=2"),
        "{}",
        f[0].fix
    );
    // Asking for v2 tokens ends it: their aud is the client ID, which is listed.
    v["api"]["requestedAccessTokenVersion"] = 2.into();
    assert!(findings(&c, &v).is_empty(), "{:?}", findings(&c, &v));
}

#[test]
fn microsoft_clients_in_the_allow_list_need_pre_authorization_too() {
    let c = config(&format!(
        "allowed_client_ids = [\"{PQ}\", \"7ab7862c-4c57-491e-8a45-d52a7e023983\"]"
    ));
    let f = findings(&c, &graph());
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].message
            .starts_with("entra.allowed_client_ids admits the client 7ab7862c")
            && f[0].message.contains("AADSTS650057"),
        "{}",
        f[0].message
    );
}

#[test]
fn lists_and_non_applications_are_named() {
    assert!(App::parse("[]").expect_err("empty").contains("empty list"));
    assert!(
        App::parse(&serde_json::json!([graph(), graph()]).to_string())
            .expect_err("two")
            .contains("2 applications")
    );
    assert!(
        App::parse("{\"a\": 1}")
            .expect_err("obj")
            .contains("not an application")
    );
    assert!(App::parse("<xml/>").expect_err("xml").contains("not JSON"));
}
