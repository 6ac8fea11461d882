//! Route rules: which route a request falls under, and whether a verified token may use it.
//!
//! First rule whose path prefix (segment-wise, on the normalised path) and method match wins;
//! no match means a valid token suffices. A rule's `clients`, then `scopes`/`roles`, then
//! `claims` are checked; a failure is a 403 `insufficient_scope` whose `scope=` lists what the
//! route accepts: its scopes for a delegated token, its roles for an app-only one.

use http::Method;

use super::{Claims, Principal, Reason};
use crate::config::Route;
use crate::path::is_under;

/// The configured rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    routes: Vec<Route>,
}

/// A refusal by a route rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: Reason,
    /// Space-separated scopes (or roles) the route accepts; empty when it names none.
    pub scope: String,
}

impl Policy {
    #[must_use]
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every scope the rules name, in order of first appearance.
    #[must_use]
    pub fn scopes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self.routes.iter().flat_map(|r| r.scopes.iter()) {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }

    /// The first rule matching `method` and the normalised `path`.
    #[must_use]
    pub fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            is_under(path, &r.path) && (r.methods.is_empty() || r.methods.contains(method))
        })
    }
}

/// May `principal` use `route`?
///
/// # Errors
/// [`Forbidden`] naming the first unmet requirement.
pub fn authorize(route: &Route, principal: &Principal) -> Result<(), Forbidden> {
    let claims = &principal.claims;
    match route_failures(route, claims).next() {
        None => Ok(()),
        Some(reason) => Err(Forbidden {
            reason,
            scope: needed_scope(route, claims),
        }),
    }
}

/// What the route accepts, for the 403's `scope=`: its scopes for a delegated token, its
/// roles for an app-only one.
#[must_use]
pub fn needed_scope(route: &Route, claims: &Claims) -> String {
    if claims.is_delegated() {
        route.scopes.join(" ")
    } else {
        route.roles.join(" ")
    }
}

/// Every requirement of `route` that `claims` do not meet, in the order [`authorize`]
/// checks them (it stops at the first; `explain` lists all): `clients`, then
/// `scopes`/`roles`, then each of `claims`.
pub fn route_failures<'a>(
    route: &'a Route,
    claims: &'a Claims,
) -> impl Iterator<Item = Reason> + 'a {
    let delegated = claims.is_delegated();
    let client = (!route.clients.is_empty()
        && !claims
            .client_id()
            .is_some_and(|c| route.clients.iter().any(|ok| ok.eq_ignore_ascii_case(c))))
    .then_some(Reason::ClientNotAllowedOnRoute);

    let permission = if route.scopes.is_empty() && route.roles.is_empty() {
        None
    } else {
        let has_role = claims.roles().any(|r| route.roles.iter().any(|ok| ok == r));
        // A user's app roles count as roles; scopes only exist on delegated tokens.
        let has_scope = delegated
            && claims
                .scopes()
                .any(|s| route.scopes.iter().any(|ok| ok == s));
        match (has_scope || has_role, delegated && !route.scopes.is_empty()) {
            (true, _) => None,
            (false, true) => Some(Reason::ScopeMissing),
            (false, false) => Some(Reason::RoleMissing),
        }
    };

    let required = route
        .claims
        .iter()
        .filter_map(|(name, allowed)| match claims.values(name) {
            Some(values) if values.iter().any(|v| allowed.iter().any(|a| a == v)) => None,
            None if claims.is_overage(name) => Some(Reason::GroupsOverage),
            _ => Some(Reason::ClaimMissing),
        });
    client.into_iter().chain(permission).chain(required)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(scopes: &[&str], roles: &[&str]) -> Route {
        Route {
            path: "/q".into(),
            methods: vec![],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            clients: vec![],
            claims: vec![],
            anonymous: false,
            max_body: None,
            auth_context: None,
            ip: crate::config::IpFilter::default(),
        }
    }

    fn principal(claims: serde_json::Value) -> Principal {
        Principal::of_claims(claims)
    }

    #[test]
    fn delegated_needs_a_scope_or_a_user_role() {
        let r = route(&["aql.read"], &["AQL.Read.All"]);
        assert!(
            authorize(
                &r,
                &principal(serde_json::json!({"scp": "user_impersonation aql.read"}))
            )
            .is_ok()
        );
        assert!(
            authorize(
                &r,
                &principal(serde_json::json!({"scp": "x", "roles": ["AQL.Read.All"]}))
            )
            .is_ok()
        );
        let denied = authorize(
            &r,
            &principal(serde_json::json!({"scp": "user_impersonation"})),
        )
        .expect_err("denied");
        assert_eq!(
            denied,
            Forbidden {
                reason: Reason::ScopeMissing,
                scope: "aql.read".into()
            }
        );
    }

    #[test]
    fn app_only_needs_a_role() {
        let r = route(&["aql.read"], &["AQL.Read.All", "AQL.Admin"]);
        assert!(
            authorize(
                &r,
                &principal(serde_json::json!({"roles": ["AQL.Read.All"], "idtyp": "app"}))
            )
            .is_ok()
        );
        let denied =
            authorize(&r, &principal(serde_json::json!({"roles": ["Other"]}))).expect_err("denied");
        assert_eq!(
            denied,
            Forbidden {
                reason: Reason::RoleMissing,
                scope: "AQL.Read.All AQL.Admin".into()
            }
        );
    }

    #[test]
    fn claims_and_overage() {
        let mut r = route(&[], &[]);
        r.claims = vec![("groups".into(), vec!["g1".into()])];
        assert!(authorize(&r, &principal(serde_json::json!({"groups": ["g0", "g1"]}))).is_ok());
        assert_eq!(
            authorize(&r, &principal(serde_json::json!({"groups": ["g0"]})))
                .expect_err("denied")
                .reason,
            Reason::ClaimMissing
        );
        assert_eq!(
            authorize(
                &r,
                &principal(serde_json::json!({"_claim_names": {"groups": "src1"}}))
            )
            .expect_err("denied")
            .reason,
            Reason::GroupsOverage
        );
    }

    #[test]
    fn first_matching_route_wins() {
        let mut a = route(&["a"], &[]);
        a.path = "/ehr".into();
        a.methods = vec![Method::POST];
        let mut b = route(&["b"], &[]);
        b.path = "/".into();
        let p = Policy::new(vec![a, b]);
        assert_eq!(
            p.route(&Method::POST, "/ehr/1")
                .map(|r| r.scopes[0].as_str()),
            Some("a")
        );
        assert_eq!(
            p.route(&Method::GET, "/ehr/1")
                .map(|r| r.scopes[0].as_str()),
            Some("b")
        );
        assert_eq!(
            p.route(&Method::POST, "/ehrx")
                .map(|r| r.scopes[0].as_str()),
            Some("b")
        );
    }

    #[test]
    fn grpc_methods_are_paths_of_two_segments() {
        // gRPC's `/package.Service/Method`: a rule on the service covers its methods, a rule
        // on one method only that one; the dots are no dot segments to normalisation.
        let mut method = route(&["cancel"], &[]);
        method.path = "/shop.v1.Orders/Cancel".into();
        let mut service = route(&["orders"], &[]);
        service.path = "/shop.v1.Orders".into();
        let p = Policy::new(vec![method, service]);
        let scope = |path: &str| {
            let normalized = crate::path::normalize(path).expect("normalises");
            assert_eq!(normalized, path, "a gRPC path is its own normal form");
            p.route(&Method::POST, &normalized)
                .map(|r| r.scopes[0].clone())
        };
        assert_eq!(scope("/shop.v1.Orders/Cancel").as_deref(), Some("cancel"));
        assert_eq!(scope("/shop.v1.Orders/Get").as_deref(), Some("orders"));
        assert_eq!(scope("/shop.v1.OrdersAdmin/Get"), None);
        assert_eq!(
            scope("/shop.v1.Orders/CancelAll").as_deref(),
            Some("orders")
        );
    }
}
