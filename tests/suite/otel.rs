//! OpenTelemetry traces (`[telemetry]`), decoded as a collector receives them: a loopback
//! OTLP/HTTP receiver (and an OTLP/gRPC one) keeps every payload, decoded with the OTLP
//! definitions (`opentelemetry-proto`). Through all three doors: span names, parentage from
//! the client's `traceparent`, the context handed on (to the upstream, in the forward-auth
//! answer, in the `ext_authz` OK response), attributes, and no token or query bytes anywhere
//! in what was sent. A dead collector changes nothing for requests and shows in `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use entragate::keys::TokenVersion;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::Value;

use crate::common::metrics::series;
use crate::common::{Extra, Harness, ext_authz, free_port, loopback};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// What a collector received: the raw request bodies.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Vec<u8>>>>);

impl Received {
    fn raw(&self) -> Vec<Vec<u8>> {
        self.0.lock().expect("lock").clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.raw()
            .iter()
            .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf"))
            .flat_map(|r| r.resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        self.raw()
            .iter()
            .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf"))
            .flat_map(|r| r.resource_spans)
            .filter_map(|r| r.resource)
            .filter_map(|r| string_attr(&r.attributes, "service.name"))
            .collect()
    }
}

/// An OTLP/HTTP receiver on loopback (`POST /v1/traces`).
async fn http_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.0.lock().expect("lock").push(body.to_vec());
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .0
            .lock()
            .expect("lock")
            .push(request.into_inner().encode_to_vec());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on loopback (the collector's `TraceService`).
async fn grpc_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(Grpc(received.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    (addr, received)
}

fn telemetry(endpoint: &str, extra: &str) -> String {
    format!(
        "[[routes]]\npath = \"/things\"\n\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\nservice_name = \"gw-under-test\"\n{extra}\n"
    )
}

/// A collector (OTLP/gRPC when `grpc`, else OTLP/HTTP) and a gateway exporting to it with
/// `[server]` lines `server` and `[telemetry]` lines `extra`; with a valid token.
async fn traced(server: &str, extra: &str, grpc: bool) -> (Harness, Received, String) {
    let (collector, received) = if grpc {
        grpc_collector().await
    } else {
        http_collector().await
    };
    let h = Harness::start_with(Extra {
        server: server.to_owned(),
        tail: telemetry(&format!("http://{collector}"), extra),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    (h, received, token)
}

/// Flushes the gateway's exporter until `n` spans of trace `trace_id` have arrived.
async fn spans_of(h: &Harness, received: &Received, trace_id: &str, n: usize) -> Vec<Span> {
    for _ in 0..100 {
        if let Some(t) = h.gw.tracing() {
            t.flush(Duration::from_secs(5)).await;
        }
        let spans: Vec<Span> = received
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} spans of trace {trace_id}: {:?}",
        received.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attr(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn attr(span: &Span, key: &str) -> Option<String> {
    string_attr(&span.attributes, key)
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// `(trace id, parent id, flags)` of a `traceparent` value.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// GET `path` with `token` as the bearer, `traceparent` and `headers`.
async fn get_traced(
    h: &Harness,
    path: &str,
    token: &str,
    traceparent: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = h
        .client
        .get(h.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("traceparent", traceparent);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

/// No token bytes (any of its three parts) nor the query in anything the collector got.
fn assert_nothing_secret(received: &Received, token: &str, query: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    for raw in received.raw() {
        for needle in parts.iter().copied().chain([query, "Bearer"]) {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} was exported"
            );
        }
    }
}

#[tokio::test]
async fn a_proxied_request_continues_the_clients_trace_and_hands_it_to_the_upstream() {
    let (h, received, token) = traced("", "", false).await;
    let resp = get_traced(
        &h,
        "/things/42?q=secret-query-text",
        &token,
        &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        &[
            ("tracestate", "vendor=abc"),
            ("user-agent", "Microsoft.Data.Mashup"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.expect("echo");
    let spans = spans_of(&h, &received, TRACE_ID, 3).await;

    let server = named(&spans, "GET /things");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_ID,
        "the client's span is the parent"
    );
    let server_id = hex(&server.span_id);
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/things/42"),
        ("url.scheme", "http"),
        ("http.route", "/things"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
        ("user_agent.original", "Microsoft.Data.Mashup"),
        ("entragate.outcome", "allowed"),
        ("entragate.reason", "none"),
        ("entragate.route", "/things"),
        ("entragate.api", "default"),
        ("entragate.via", "proxy"),
    ] {
        assert_eq!(attr(server, key).as_deref(), Some(want), "{key}");
    }
    assert!(attr(server, "server.address").is_some());
    assert_eq!(
        attr(server, "enduser.id"),
        None,
        "record_user is off by default"
    );

    let decision = named(&spans, "decision");
    assert_eq!(hex(&decision.parent_span_id), server_id);
    assert_eq!(
        attr(decision, "entragate.token_cache").as_deref(),
        Some("miss")
    );
    assert_eq!(
        attr(decision, "entragate.token_verified").as_deref(),
        Some("true")
    );

    let upstream = named(&spans, "upstream");
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(hex(&upstream.parent_span_id), server_id);
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(upstream.events.iter().any(|e| e.name == "response headers"));
    assert!(
        attr(upstream, "entragate.body_bytes").is_some_and(|n| n.parse::<u64>().expect("n") > 0),
        "the span ends once the body is streamed"
    );
    assert!(upstream.end_time_unix_nano <= server.end_time_unix_nano);

    // The upstream got the gateway's upstream span as its parent, and the client's state.
    let sent = echoed["headers"]["traceparent"]
        .as_str()
        .expect("traceparent upstream");
    let (trace, parent, flags) = traceparent(sent);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
    assert_eq!(parent, hex(&upstream.span_id));
    assert_eq!(echoed["headers"]["tracestate"], "vendor=abc");

    assert_eq!(received.service_names()[0], "gw-under-test");
    assert_nothing_secret(&received, &token, "secret-query-text");

    // The same token again: the cache answers, and a refusal is traced too.
    let again = get_traced(
        &h,
        "/things/43",
        &token,
        &format!("00-{}-{PARENT_ID}-01", "1".repeat(32)),
        &[],
    )
    .await;
    assert_eq!(again.status(), 200);
    let spans = spans_of(&h, &received, &"1".repeat(32), 3).await;
    assert_eq!(
        attr(named(&spans, "decision"), "entragate.token_cache").as_deref(),
        Some("hit")
    );
    let refused = h
        .client
        .get(h.url("/elsewhere"))
        .header(
            "traceparent",
            format!("00-{}-{PARENT_ID}-01", "2".repeat(32)),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let spans = spans_of(&h, &received, &"2".repeat(32), 2).await;
    let server = named(&spans, "GET");
    assert_eq!(
        attr(server, "entragate.reason").as_deref(),
        Some("missing_token")
    );
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert!(spans.iter().all(|s| s.name != "upstream"));
}

#[tokio::test]
async fn the_user_is_recorded_only_when_asked_and_a_malformed_parent_starts_a_new_trace() {
    let (h, received, token) = traced("", "record_user = true", false).await;
    let resp = get_traced(
        &h,
        "/things/1",
        &token,
        &format!("00-{TRACE_ID}-zz-01"),
        &[("tracestate", "vendor=abc")],
    )
    .await;
    let echoed: Value = resp.json().await.expect("echo");
    let sent = echoed["headers"]["traceparent"]
        .as_str()
        .expect("traceparent");
    let (trace, _, flags) = traceparent(sent);
    assert_ne!(
        trace, TRACE_ID,
        "a malformed traceparent starts a new trace"
    );
    assert_eq!(flags, "01");
    assert!(
        echoed["headers"].get("tracestate").is_none(),
        "the state of a trace not continued is not passed on: {}",
        echoed["headers"]
    );
    let spans = spans_of(&h, &received, &trace, 3).await;
    let server = named(&spans, "GET /things");
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        attr(server, "enduser.id").as_deref(),
        Some("00000000-0000-4000-8000-00000000a11e")
    );
    assert_nothing_secret(&received, &token, "no-query");
}

#[tokio::test]
async fn an_unsampled_parent_is_not_kept_but_still_handed_on() {
    let (h, received, token) = traced("", "", false).await;
    let resp = get_traced(
        &h,
        "/things/1",
        &token,
        &format!("00-{TRACE_ID}-{PARENT_ID}-00"),
        &[],
    )
    .await;
    let echoed: Value = resp.json().await.expect("echo");
    let (trace, _, flags) = traceparent(echoed["headers"]["traceparent"].as_str().expect("tp"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "00"));
    // A sampled request after it is exported, the unsampled one never.
    let other = "3".repeat(32);
    get_traced(
        &h,
        "/things/2",
        &token,
        &format!("00-{other}-{PARENT_ID}-01"),
        &[],
    )
    .await
    .bytes()
    .await
    .expect("body");
    spans_of(&h, &received, &other, 3).await;
    assert!(
        received
            .spans()
            .iter()
            .all(|s| hex(&s.trace_id) != TRACE_ID),
        "a parent's sampled=0 is followed"
    );
}

#[tokio::test]
async fn forward_auth_answers_with_the_context_for_the_ingress_to_pass_on() {
    let (h, received, token) = traced(
        "mode = \"forward-auth\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        "",
        false,
    )
    .await;
    let resp = h
        .client
        .get(h.url("/auth"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/things/7?q=secret-query-text")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let answered = resp.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let spans = spans_of(&h, &received, TRACE_ID, 2).await;
    let server = named(&spans, "GET /things");
    assert_eq!(hex(&server.parent_span_id), PARENT_ID);
    assert_eq!(
        attr(server, "entragate.via").as_deref(),
        Some("forward-auth")
    );
    assert_eq!(attr(server, "url.path").as_deref(), Some("/things/7"));
    assert_eq!(
        hex(&named(&spans, "decision").parent_span_id),
        hex(&server.span_id)
    );
    let (trace, parent, _) = traceparent(&answered);
    assert_eq!((trace.as_str(), parent), (TRACE_ID, hex(&server.span_id)));
    assert_nothing_secret(&received, &token, "secret-query-text");
}

#[tokio::test]
async fn ext_authz_sets_the_context_in_its_ok_response() {
    let (h, received, token) = traced("ext_authz_listen = \"127.0.0.1:0\"\n", "", false).await;
    let bearer = format!("Bearer {token}");
    let tp = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let r = ext_authz::check(
        h.gw.ext_authz_addr.expect("ext_authz"),
        ext_authz::request(
            "GET",
            "/things/9?q=secret-query-text",
            &[("authorization", &bearer), ("traceparent", &tp)],
        ),
    )
    .await;
    let (set, _) = ext_authz::allowed(&r);
    let spans = spans_of(&h, &received, TRACE_ID, 2).await;
    let server = named(&spans, "GET /things");
    assert_eq!(hex(&server.parent_span_id), PARENT_ID);
    assert_eq!(attr(server, "entragate.via").as_deref(), Some("ext_authz"));
    assert_eq!(
        attr(server, "client.address").as_deref(),
        Some("203.0.113.7")
    );
    let (trace, parent, _) = traceparent(&set["traceparent"]);
    assert_eq!((trace.as_str(), parent), (TRACE_ID, hex(&server.span_id)));
    assert_nothing_secret(&received, &token, "secret-query-text");
}

#[tokio::test]
async fn spans_reach_an_otlp_grpc_collector() {
    let (h, received, token) = traced("", "otlp_protocol = \"grpc\"", true).await;
    get_traced(
        &h,
        "/things/1",
        &token,
        &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        &[],
    )
    .await
    .bytes()
    .await
    .expect("body");
    let spans = spans_of(&h, &received, TRACE_ID, 3).await;
    assert_eq!(hex(&named(&spans, "GET /things").parent_span_id), PARENT_ID);
    assert_nothing_secret(&received, &token, "no-query");
}

#[tokio::test]
async fn a_dead_collector_changes_nothing_for_requests_and_shows_in_metrics() {
    let dead = free_port();
    let h = Harness::start_with(Extra {
        tail: telemetry(&format!("http://127.0.0.1:{dead}"), ""),
        ..Extra::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    for i in 0..20 {
        let resp = h.get_with_token(&format!("/things/{i}"), &token).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    }
    h.gw.tracing()
        .expect("tracing on")
        .flush(Duration::from_secs(15))
        .await;
    let text = h.metrics_text().await;
    assert!(
        series(&text, "entragate_trace_export_failures_total") >= 1,
        "{text}"
    );
    assert!(
        series(&text, "entragate_trace_spans_dropped_total") >= 60,
        "{text}"
    );
    assert_eq!(series(&text, "entragate_trace_spans_exported_total"), 0);
}

#[tokio::test]
async fn without_telemetry_the_clients_trace_context_passes_untouched() {
    let h = Harness::start().await;
    assert!(h.gw.tracing().is_none());
    let token = h.token(TokenVersion::V2);
    let tp = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let echoed: Value = get_traced(&h, "/x", &token, &tp, &[("tracestate", "vendor=abc")])
        .await
        .json()
        .await
        .expect("echo");
    let headers: HashMap<String, Value> =
        serde_json::from_value(echoed["headers"].clone()).expect("headers");
    assert_eq!(headers["traceparent"], tp.as_str());
    assert_eq!(headers["tracestate"], "vendor=abc");
    let text = h.metrics_text().await;
    assert_eq!(series(&text, "entragate_trace_spans_exported_total"), 0);
}

#[tokio::test]
async fn a_key_fetch_the_request_waited_for_is_a_span_of_its_decision() {
    let (collector, received) = http_collector().await;
    let h = Harness::start_with(Extra {
        entra: "jwks_min_refetch = \"0s\"\n".into(),
        tail: telemetry(&format!("http://{collector}"), ""),
        ..Extra::default()
    })
    .await;
    // A key published after the gateway loaded its keys: the token's `kid` is unknown.
    h.issuer.rotate();
    let token = h.token(TokenVersion::V2);
    let resp = get_traced(
        &h,
        "/things/1",
        &token,
        &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect("body");
    let spans = spans_of(&h, &received, TRACE_ID, 4).await;
    let decision = named(&spans, "decision");
    let fetch = named(&spans, "key fetch");
    assert_eq!(hex(&fetch.parent_span_id), hex(&decision.span_id));
    assert_eq!(attr(fetch, "entragate.outcome").as_deref(), Some("ok"));
    assert!(attr(fetch, "entragate.key_source").is_some());
    assert_nothing_secret(&received, &token, "no-query");
}

#[tokio::test]
async fn a_reload_that_changes_telemetry_says_a_restart_is_needed() {
    let mut h = Harness::start().await;
    let toml = crate::common::config_toml(
        &h.issuer,
        &h.echo.url(),
        &Extra {
            tail: telemetry("http://127.0.0.1:4318", ""),
            ..Extra::default()
        },
    );
    let applied =
        h.gw.apply(&crate::common::load(&toml))
            .await
            .expect("applied");
    assert!(
        applied
            .restart_needed
            .iter()
            .any(|(key, in_force)| *key == "telemetry.*" && in_force == "off"),
        "{:?}",
        applied.restart_needed
    );
    assert!(h.gw.tracing().is_none(), "tracing starts only at startup");
}
