//! OpenTelemetry traces (`[telemetry]`): one server span per request, whichever door, with
//! its children `decision`, `key fetch` and `upstream`, exported over OTLP.
//!
//! Off (no `telemetry.otlp_endpoint`), the gateway holds no [`Tracing`] and the request path
//! only tests an `Option`: no span, no allocation, no header parsing, and the client's
//! `traceparent` passes to the upstream untouched.
//!
//! On, [`crate::gateway::AccessRecord`] (where all three doors start and finish a request)
//! drives a [`RequestTrace`]: the client's `traceparent` / `tracestate` (W3C Trace Context)
//! continue its trace, a malformed one starts a new trace; the sampler is parent-based
//! (`telemetry.sample_ratio` for traces that start here). Spans carry the facts the access
//! log carries and no more: never the token, never the query string.
//!
//! The spans are made with the `opentelemetry` API directly rather than through
//! `tracing-opentelemetry`: a `tracing` layer would see every span and event of the process
//! (and cost on each) while tracing is off; here nothing exists until a request is traced.

pub mod export;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};

use crate::config::{Otlp, OtlpProtocol};
use crate::metrics::TraceCounters;

pub use export::BoundedBatch;

/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The tracer of a running gateway (present only with `[telemetry]`).
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    processor: BoundedBatch,
    propagator: TraceContextPropagator,
    /// `telemetry.record_user`.
    pub record_user: bool,
    /// The config it was started with (a change needs a restart).
    pub config: Otlp,
}

/// Tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint: cannot build the OTLP exporter: {0}")]
pub struct StartError(String);

impl Tracing {
    /// Starts the exporter task on the current Tokio runtime.
    ///
    /// # Errors
    /// When the exporter cannot be built (an endpoint tonic cannot use).
    pub fn start(config: &Otlp, counters: TraceCounters) -> Result<Arc<Self>, StartError> {
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let processor = match config.protocol {
            OtlpProtocol::HttpProtobuf => {
                let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(export::HyperClient::new())
                    .with_endpoint(config.endpoint.clone())
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(export::EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| StartError(e.to_string()))?;
                exporter.set_resource(&resource);
                BoundedBatch::start(exporter, counters)
            }
            OtlpProtocol::Grpc => {
                let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(export::EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| StartError(e.to_string()))?;
                exporter.set_resource(&resource);
                BoundedBatch::start(exporter, counters)
            }
        };
        let ratio = Sampler::TraceIdRatioBased(config.sampling.ratio);
        let sampler = if config.sampling.parent_based {
            Sampler::ParentBased(Box::new(ratio))
        } else {
            ratio
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor.clone())
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("entragate");
        Ok(Arc::new(Self {
            provider,
            tracer,
            processor,
            propagator: TraceContextPropagator::new(),
            record_user: config.record_user,
            config: config.clone(),
        }))
    }

    /// Sends the spans still queued, waiting at most `wait` (shutdown).
    pub async fn shutdown(&self, wait: Duration) {
        self.processor.close(wait).await;
        let _ = self.provider.shutdown();
    }

    /// Sends the spans queued so far, waiting at most `wait` (tests).
    pub async fn flush(&self, wait: Duration) {
        self.processor.flush(wait).await;
    }

    /// The trace context the client sent (`traceparent`, `tracestate`): empty when absent
    /// or malformed.
    #[must_use]
    pub fn extract(&self, headers: &HeaderMap) -> Context {
        self.propagator
            .extract(&opentelemetry_http::HeaderExtractor(headers))
    }

    /// Starts the server span of a request at `started`, as a child of `parent` (the
    /// client's context).
    #[must_use]
    pub fn server_span(
        self: &Arc<Self>,
        parent: &Context,
        name: &'static str,
        started: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> RequestTrace {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        let cx = parent.with_span(span).with_value(Traced(Arc::clone(self)));
        RequestTrace {
            tracing: Arc::clone(self),
            cx,
            upstream: None,
        }
    }
}

/// Marks a context as traced by a gateway's [`Tracing`]: code below the gateway (the key
/// fetch) reads it from [`Context::current`] to add its span.
#[derive(Debug, Clone)]
struct Traced(Arc<Tracing>);

/// The spans of one traced request: the server span, and the upstream span while the
/// request is forwarded.
#[derive(Debug)]
pub struct RequestTrace {
    tracing: Arc<Tracing>,
    /// The server span's context.
    cx: Context,
    /// The upstream call's context (proxy only), once started.
    upstream: Option<Context>,
}

impl RequestTrace {
    /// Starts the `decision` span; the returned context is the one `Gateway::check` runs in.
    #[must_use]
    pub fn decision(&self) -> Context {
        let span = self
            .tracing
            .tracer
            .span_builder("decision")
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracing.tracer, &self.cx);
        self.cx.with_span(span)
    }

    /// True when the request is sampled: its spans are kept and exported.
    #[must_use]
    pub fn is_recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Names the server span (`GET /route`) once the route is known.
    pub fn rename(&self, name: String) {
        self.cx.span().update_name(name);
    }

    pub fn set_attributes(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Starts the `upstream` span (a client span, child of the server span), whose context
    /// the forwarded request carries.
    pub fn start_upstream(&mut self, attributes: Vec<KeyValue>) {
        let span = self
            .tracing
            .tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracing.tracer, &self.cx);
        self.upstream = Some(self.cx.with_span(span));
    }

    /// The headers that carry this request's context on: the upstream span's when there is
    /// one, else the server span's (for the ingress or Envoy to pass on).
    #[must_use]
    pub fn headers(&self) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let cx = self.upstream.as_ref().unwrap_or(&self.cx);
        let mut out = HeaderMap::new();
        self.tracing
            .propagator
            .inject_context(cx, &mut opentelemetry_http::HeaderInjector(&mut out));
        // An empty `tracestate` is none (the propagator writes one for a new trace).
        (
            out.remove(TRACEPARENT),
            out.remove(TRACESTATE).filter(|v| !v.is_empty()),
        )
    }

    /// The upstream's response headers arrived after `elapsed` (of the forward).
    pub fn upstream_answered(&self, status: Option<u16>, elapsed: Duration) {
        let Some(cx) = &self.upstream else { return };
        let span = cx.span();
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
        } else {
            span.set_status(Status::error("upstream failed"));
        }
        span.add_event_with_timestamp(
            "response headers",
            SystemTime::now(),
            vec![KeyValue::new(
                "entragate.time_to_headers_ms",
                elapsed.as_secs_f64() * 1000.0,
            )],
        );
    }

    /// Ends the server span with the status sent (and the upstream span with it).
    pub fn end(self, status: u16, attributes: impl IntoIterator<Item = KeyValue>) {
        self.end_at(status, attributes, None);
    }

    fn end_at(
        self,
        status: u16,
        attributes: impl IntoIterator<Item = KeyValue>,
        body: Option<(u64, bool)>,
    ) {
        if let Some(up) = &self.upstream {
            if let Some((bytes, complete)) = body {
                up.span()
                    .set_attribute(KeyValue::new("entragate.body_bytes", bytes as i64));
                if !complete {
                    up.span().set_status(Status::error("body broke off"));
                }
            }
            up.span().end();
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attributes(attributes);
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }

    /// The proxied response's body, ending the spans when it has been streamed (or dropped).
    pub fn wrap_body<B>(self, status: u16, attributes: Vec<KeyValue>, body: B) -> TracedBody<B> {
        TracedBody {
            inner: body,
            end: Some((self, status, attributes)),
            bytes: 0,
        }
    }
}

/// Ends the `decision` span run in `cx`.
pub fn end_decision(cx: &Context, attributes: impl IntoIterator<Item = KeyValue>) {
    let span = cx.span();
    span.set_attributes(attributes);
    span.end();
}

/// A key fetch a request waited for (`source`: the key source's name), as a `key fetch` span
/// of the request's `decision`, when the request is traced; nothing otherwise.
pub fn key_fetch(source: &str, started: SystemTime, ok: bool) {
    let cx = Context::current();
    let Some(Traced(tracing)) = cx.get::<Traced>() else {
        return;
    };
    let mut span = tracing
        .tracer
        .span_builder("key fetch")
        .with_kind(SpanKind::Client)
        .with_start_time(started)
        .with_attributes([
            KeyValue::new("entragate.key_source", source.to_owned()),
            KeyValue::new("entragate.outcome", if ok { "ok" } else { "error" }),
        ])
        .start_with_context(&tracing.tracer, &cx);
    if !ok {
        span.set_status(Status::error("key fetch failed"));
    }
    span.end();
}

/// A response body that ends the request's spans once streamed.
pub struct TracedBody<B> {
    inner: B,
    end: Option<(RequestTrace, u16, Vec<KeyValue>)>,
    bytes: u64,
}

impl<B> TracedBody<B> {
    fn finish(&mut self, complete: bool) {
        if let Some((trace, status, attributes)) = self.end.take() {
            trace.end_at(status, attributes, Some((self.bytes, complete)));
        }
    }
}

impl<B> Drop for TracedBody<B> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<B> http_body::Body for TracedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use bytes::Buf as _;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.remaining() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            std::task::Poll::Ready(None) => this.finish(true),
            std::task::Poll::Ready(Some(Err(_))) => this.finish(false),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
