//! Rule kinds on small configs: required claims and group overage, methods and the first
//! matching rule, segment-wise path prefixes.

use crate::common;

use super::{
    ETL_CLIENT, app_claims, app_token, assert_forbidden, call, counts, passed, request_counts,
    start_with_tail, user_token,
};
use common::{API_CLIENT_ID, AUDIENCE, Extra, TENANT};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;
use serde_json::{Map, Value, json};

#[tokio::test]
async fn required_claims_allow_deny_and_group_overage() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/reports"
claims = { groups = ["g-analysts", "g-admins"] }

[[routes]]
path = "/wards"
claims = { department = "cardiology", groups = ["g-clinicians"] }
"#,
    )
    .await;
    let mint = |f: &dyn Fn(&mut Map<String, Value>), version| {
        let mut c = h.claims(version);
        f(&mut c);
        h.issuer.mint(&c)
    };
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let v = version.claim();
        // Allowed: the claim holds one of the values (array claim).
        let t = mint(
            &|c| {
                c.insert("groups".into(), json!(["g-other", "g-admins"]));
            },
            version,
        );
        passed(call(&h, "GET", "/reports/q1", Some(&t)).await, v).await;
        // Denied: none of the values, or no claim at all.
        let t = mint(
            &|c| {
                c.insert("groups".into(), json!(["g-other", "G-ADMINS"]));
            },
            version,
        );
        assert_forbidden(call(&h, "GET", "/reports", Some(&t)).await, None, v).await;
        assert_forbidden(
            call(&h, "GET", "/reports", Some(&h.token(version))).await,
            None,
            v,
        )
        .await;
        // Group overage: more than 200 groups, only a reference in _claim_names.
        let overage = mint(
            &|c| {
                c.insert("_claim_names".into(), json!({"groups": "src1"}));
                c.insert(
                    "_claim_sources".into(),
                    json!({"src1": {"endpoint": format!("https://graph.windows.net/{TENANT}/users/x/getMemberObjects")}}),
                );
            },
            version,
        );
        assert_forbidden(call(&h, "GET", "/reports", Some(&overage)).await, None, v).await;
        // The same token is fine where no rule needs groups.
        passed(call(&h, "GET", "/elsewhere", Some(&overage)).await, v).await;
    }
    // Several claims: each must hold one of its values; a string claim compares as one value.
    let both = |dept: Value, groups: Value| {
        mint(
            &|c| {
                c.insert("department".into(), dept.clone());
                c.insert("groups".into(), groups.clone());
            },
            TokenVersion::V2,
        )
    };
    passed(
        call(
            &h,
            "GET",
            "/wards/7",
            Some(&both(json!("cardiology"), json!(["g-clinicians"]))),
        )
        .await,
        "both claims",
    )
    .await;
    passed(
        call(
            &h,
            "GET",
            "/wards/7",
            Some(&both(
                json!(["oncology", "cardiology"]),
                json!(["g-clinicians"]),
            )),
        )
        .await,
        "array department",
    )
    .await;
    for (dept, groups) in [
        (json!("oncology"), json!(["g-clinicians"])),
        (json!("cardiology"), json!(["g-analysts"])),
        (json!(42), json!(["g-clinicians"])),
        (json!("Cardiology"), json!(["g-clinicians"])),
    ] {
        assert_forbidden(
            call(&h, "GET", "/wards", Some(&both(dept, groups))).await,
            None,
            "wards",
        )
        .await;
    }
    // An app-only token meets the same claim rules.
    let mut app = app_claims(&h, TokenVersion::V2, API_CLIENT_ID, ETL_CLIENT, None);
    app.insert("groups".into(), json!(["g-analysts"]));
    passed(
        call(&h, "GET", "/reports", Some(&h.issuer.mint(&app))).await,
        "app-only with the group",
    )
    .await;

    assert_eq!(h.echo.requests(), 7);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("allowed/none", 7),
            ("denied/claim_missing", 8),
            ("denied/groups_overage", 2),
        ])
    );
}

#[tokio::test]
async fn methods_filter_and_the_first_matching_rule_wins() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/api/public"
anonymous = true

[[routes]]
path = "/api/items"
methods = ["post", "DELETE"]
roles = ["Items.Write"]

[[routes]]
path = "/api"
scopes = ["Api.Read"]
roles = ["Api.Read.All"]

[[routes]]
path = "/api/open"
anonymous = true
"#,
    )
    .await;
    let reader = user_token(
        &h,
        TokenVersion::V2,
        API_CLIENT_ID,
        POWER_QUERY_CLIENT_ID,
        "Api.Read",
    );
    let nobody = user_token(
        &h,
        TokenVersion::V1,
        AUDIENCE,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation",
    );
    let writer = app_token(
        &h,
        TokenVersion::V2,
        API_CLIENT_ID,
        ETL_CLIENT,
        Some(&["Items.Write"]),
    );
    let app_reader = app_token(
        &h,
        TokenVersion::V1,
        AUDIENCE,
        ETL_CLIENT,
        Some(&["Api.Read.All"]),
    );

    // The first rule: anonymous.
    passed(
        call(&h, "GET", "/api/public/x", None).await,
        "anonymous rule",
    )
    .await;
    // A later anonymous rule under /api is never reached: /api matched first.
    let r = call(&h, "GET", "/api/open", None).await;
    assert_eq!(r.status(), 401, "/api/open is decided by /api");
    assert_forbidden(
        call(&h, "GET", "/api/open", Some(&nobody)).await,
        Some("Api.Read"),
        "/api/open without Api.Read",
    )
    .await;
    passed(
        call(&h, "GET", "/api/open", Some(&reader)).await,
        "/api/open with Api.Read",
    )
    .await;

    // /api/items: POST and DELETE fall under the write rule, GET and PUT under /api.
    passed(
        call(&h, "GET", "/api/items", Some(&reader)).await,
        "GET items",
    )
    .await;
    passed(
        call(&h, "PUT", "/api/items/7", Some(&app_reader)).await,
        "PUT is not in the first rule's methods",
    )
    .await;
    assert_forbidden(
        call(&h, "GET", "/api/items", Some(&nobody)).await,
        Some("Api.Read"),
        "GET items without Api.Read",
    )
    .await;
    assert_forbidden(
        call(&h, "POST", "/api/items", Some(&reader)).await,
        None,
        "user token on the role-only write rule",
    )
    .await;
    assert_forbidden(
        call(&h, "DELETE", "/api/items/7", Some(&app_reader)).await,
        Some("Items.Write"),
        "app-only reader on the write rule",
    )
    .await;
    passed(
        call(&h, "POST", "/api/items", Some(&writer)).await,
        "POST items",
    )
    .await;
    passed(
        call(&h, "DELETE", "/api/items/7", Some(&writer)).await,
        "DELETE item",
    )
    .await;
    assert_forbidden(
        call(&h, "GET", "/api/items", Some(&writer)).await,
        Some("Api.Read.All"),
        "the writer cannot read through /api",
    )
    .await;

    // No rule: a valid token suffices, and is still required.
    passed(
        call(&h, "GET", "/other", Some(&nobody)).await,
        "no rule, valid token",
    )
    .await;
    let r = call(&h, "GET", "/other", None).await;
    assert_eq!(r.status(), 401);

    assert_eq!(h.echo.requests(), 7);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("anonymous/none", 1),
            ("allowed/none", 6),
            ("denied/missing_token", 2),
            ("denied/scope_missing", 2),
            ("denied/role_missing", 3),
        ])
    );
}

#[tokio::test]
async fn a_rules_path_is_a_segment_wise_prefix() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[[routes]]
path = "/ehr/"
scopes = ["EHR.Read"]
"#,
    )
    .await;
    let token = h.token(TokenVersion::V2);
    for path in [
        "/ehr",
        "/ehr/",
        "/ehr/123",
        "/ehr/123/composition",
        "/ehr?x=1",
    ] {
        assert_forbidden(
            call(&h, "GET", path, Some(&token)).await,
            Some("EHR.Read"),
            path,
        )
        .await;
    }
    for path in [
        "/ehrx",
        "/ehr.json",
        "/ehr-archive/1",
        "/ehrbase/ehr",
        "/x/ehr",
    ] {
        let seen = passed(call(&h, "GET", path, Some(&token)).await, path).await;
        assert_eq!(seen["uri"], path);
    }
    assert_eq!(
        request_counts(&h).await,
        counts(&[("allowed/none", 5), ("denied/scope_missing", 5)])
    );
}
