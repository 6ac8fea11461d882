//! The request's spans, as the access record drives them (see [`crate::trace`]): what each
//! span says, taken from the view and the decision, the facts the access log has. Never the
//! token, never the query string (`url.path` is the path alone).

use std::time::SystemTime;

use http::header;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;

use super::{Decision, Gateway, RequestView, Verdict};
use crate::access::Via;
use crate::auth::Facts;
use crate::metrics::Outcome;
use crate::trace::{self, RequestTrace, TRACEPARENT, TRACESTATE, Tracing};

/// The HTTP semantic conventions' method names; any other is `_OTHER` (and the span `HTTP`).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn known_method(method: &str) -> Option<&'static str> {
    KNOWN_METHODS.iter().find(|m| **m == method).copied()
}

/// Decides `view` under a server span: the client's trace context continued, the `decision`
/// span around [`Gateway::check`], the span named by the route, and for a pass the context
/// the request carries on (the proxy's upstream span, else the server span) as header edits.
pub(super) async fn check<'g>(
    tracing: &std::sync::Arc<Tracing>,
    gw: &'g Gateway,
    view: &RequestView<'_, '_>,
    via: Via,
    started: SystemTime,
    protocol: Option<&'static str>,
) -> (Decision<'g>, RequestTrace) {
    let parent = tracing.extract(view.headers);
    let method = known_method(view.method);
    let name = method.unwrap_or("HTTP");
    let mut trace = tracing.server_span(&parent, name, started, Vec::new());
    if !trace.is_recording() {
        // Not sampled: no span is kept, so none is described; the trace still goes on.
        let mut decision = gw.check(view).await;
        hand_on(&trace, &mut decision, view);
        return (decision, trace);
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.unwrap_or("_OTHER")),
        KeyValue::new("url.path", view.path().to_owned()),
        KeyValue::new("url.scheme", view.scheme.to_owned()),
        KeyValue::new("entragate.via", via.as_str()),
    ];
    if method.is_none() {
        attributes.push(KeyValue::new(
            "http.request.method_original",
            view.method.to_owned(),
        ));
    }
    if let Some(host) = view.host {
        let (name, port) = split_host(host);
        attributes.push(KeyValue::new("server.address", name.to_owned()));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    if let Some(client) = gw.client_address(view) {
        attributes.push(KeyValue::new("client.address", client.to_string()));
    }
    if let Some(version) = protocol {
        attributes.push(KeyValue::new("network.protocol.version", version));
    }
    if let Some(agent) = view
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
    }
    trace.set_attributes(attributes);
    let decision_cx = trace.decision();
    let mut decision = gw.check(view).with_context(decision_cx.clone()).await;

    let (outcome, reason) = decision.outcome.labels();
    let mut facts = vec![
        KeyValue::new("entragate.outcome", outcome),
        KeyValue::new("entragate.reason", reason),
    ];
    if let Some(hit) = decision.token_cache {
        facts.push(KeyValue::new(
            "entragate.token_cache",
            if hit { "hit" } else { "miss" },
        ));
        facts.push(KeyValue::new("entragate.token_verified", !hit));
    }
    if let Some(route) = decision.route {
        facts.push(KeyValue::new("entragate.route", route.path.clone()));
    }
    trace::end_decision(&decision_cx, facts);

    let mut found = Vec::with_capacity(3);
    if let Some(route) = decision.route {
        trace.rename(format!("{name} {}", route.path));
        found.push(KeyValue::new("http.route", route.path.clone()));
        found.push(KeyValue::new("entragate.route", route.path.clone()));
    }
    if let Some(api) = decision.api_name() {
        found.push(KeyValue::new("entragate.api", api.to_owned()));
    }
    trace.set_attributes(found);

    if let Verdict::Pass(pass) = &decision.verdict
        && via == Via::Proxy
    {
        let upstream = pass.api.forwarder.authority();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.unwrap_or("_OTHER")),
            KeyValue::new("server.address", upstream.host().to_owned()),
            KeyValue::new(
                "url.scheme",
                pass.api.forwarder.scheme().as_str().to_owned(),
            ),
        ];
        if let Some(port) = upstream.port_u16() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        trace.start_upstream(attributes);
    }
    hand_on(&trace, &mut decision, view);
    (decision, trace)
}

/// A pass carries the request's context on: `traceparent` (and `tracestate`) as header edits.
fn hand_on(trace: &RequestTrace, decision: &mut Decision<'_>, view: &RequestView<'_, '_>) {
    let Verdict::Pass(pass) = &mut decision.verdict else {
        return;
    };
    let (parent, state) = trace.headers();
    if let Some(p) = parent {
        pass.edits.set.insert(TRACEPARENT, p);
    }
    match state {
        Some(s) => {
            pass.edits.set.insert(TRACESTATE, s);
        }
        // A `tracestate` of a trace not continued belongs to no trace of ours.
        None if view.headers.contains_key(TRACESTATE) => pass.edits.remove.push(TRACESTATE),
        None => {}
    }
}

/// What the server span says when the request ends: the final outcome, and the user only
/// with `telemetry.record_user`.
pub(super) fn closing(
    trace: &RequestTrace,
    outcome: Outcome,
    facts: &Facts,
    record_user: bool,
) -> Vec<KeyValue> {
    if !trace.is_recording() {
        return Vec::new();
    }
    let (outcome, reason) = outcome.labels();
    let mut attributes = vec![
        KeyValue::new("entragate.outcome", outcome),
        KeyValue::new("entragate.reason", reason),
    ];
    if record_user && let Some(oid) = facts.oid() {
        attributes.push(KeyValue::new("enduser.id", oid.to_owned()));
    }
    attributes
}

/// `host[:port]` (or `[v6]:port`) apart.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, port)) => (addr, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(split_host("api.contoso.com"), ("api.contoso.com", None));
        assert_eq!(
            split_host("api.contoso.com:8443"),
            ("api.contoso.com", Some(8443))
        );
        assert_eq!(split_host("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(split_host("::1"), ("::1", None));
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(known_method("GET"), Some("GET"));
        assert_eq!(known_method("PROPFIND"), None);
        assert_eq!(known_method("get"), None);
    }
}
