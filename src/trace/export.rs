//! Export: a bounded queue drained in batches by one task, and the OTLP/HTTP client.
//!
//! [`BoundedBatch`] is the span processor. Ending a span puts it in a queue of
//! [`QUEUE_SPANS`] places without waiting (a full queue drops it and counts it in
//! `entragate_trace_spans_dropped_total`); one task on the runtime sends batches of up to
//! [`BATCH_SPANS`] every [`BATCH_DELAY`] (or as soon as a batch is full), each export bounded
//! by [`EXPORT_TIMEOUT`]. A failed export counts in `entragate_trace_export_failures_total` and
//! its spans as dropped. A dead collector thus costs at most the queue's memory and a counter,
//! never a request's time: requests never wait for the exporter.
//!
//! [`HyperClient`] is the OTLP/HTTP transport: the hyper client and rustls already in the
//! gateway (no second HTTP stack), with the system's root certificates for `https://`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::TraceCounters;

/// Spans waiting for export at most; past that, new ones are dropped (and counted).
pub const QUEUE_SPANS: usize = 2048;
/// Spans per export call at most.
pub const BATCH_SPANS: usize = 512;
/// How long a span waits for its batch to fill before the batch is sent anyway.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// One export call at most (OTLP's default).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

enum Message {
    Span(Box<SpanData>),
    /// Send what is queued, then answer.
    Flush(oneshot::Sender<()>),
    /// Send what is queued, shut the exporter down, answer, stop.
    Shutdown(oneshot::Sender<()>),
}

/// The span processor: see the module docs.
#[derive(Debug, Clone)]
pub struct BoundedBatch {
    queue: mpsc::Sender<Message>,
    counters: TraceCounters,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl BoundedBatch {
    /// Starts the export task on the current Tokio runtime.
    pub fn start<E: SpanExporter + 'static>(exporter: E, counters: TraceCounters) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_SPANS);
        tokio::spawn(run(exporter, rx, counters.clone()));
        Self { queue, counters }
    }

    /// Sends what is queued and shuts the exporter down, waiting at most `wait`.
    pub async fn close(&self, wait: Duration) {
        let (tx, rx) = oneshot::channel();
        // The queue may be full: waiting for a place is part of the bounded wait.
        let send = self.queue.send(Message::Shutdown(tx));
        let _ = tokio::time::timeout(wait, async {
            if send.await.is_ok() {
                let _ = rx.await;
            }
        })
        .await;
    }

    /// Sends what is queued now and waits for it, at most `wait`.
    pub async fn flush(&self, wait: Duration) {
        let (tx, rx) = oneshot::channel();
        let _ = tokio::time::timeout(wait, async {
            if self.queue.send(Message::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        })
        .await;
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.counters.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Never blocks a caller (this may run on a runtime thread): the task sends batches
        // on its own schedule; `flush` is the awaitable form.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Called when the provider is dropped; `close` is the awaitable form.
        let (tx, _rx) = oneshot::channel();
        let _ = self.queue.try_send(Message::Shutdown(tx));
        Ok(())
    }
}

async fn run<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<Message>,
    counters: TraceCounters,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH_SPANS);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let message = match deadline {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    deadline = None;
                    export(&exporter, &mut batch, &counters).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match message {
            Some(Message::Span(span)) => {
                batch.push(*span);
                if batch.len() >= BATCH_SPANS {
                    deadline = None;
                    export(&exporter, &mut batch, &counters).await;
                } else if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + BATCH_DELAY);
                }
            }
            Some(Message::Flush(done)) => {
                deadline = None;
                drain(&mut rx, &mut batch, &exporter, &counters).await;
                let _ = done.send(());
            }
            Some(Message::Shutdown(done)) => {
                drain(&mut rx, &mut batch, &exporter, &counters).await;
                let _ = exporter.shutdown();
                let _ = done.send(());
                return;
            }
            None => {
                export(&exporter, &mut batch, &counters).await;
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}

/// Sends the batch and every span already queued.
async fn drain<E: SpanExporter>(
    rx: &mut mpsc::Receiver<Message>,
    batch: &mut Vec<SpanData>,
    exporter: &E,
    counters: &TraceCounters,
) {
    while let Ok(m) = rx.try_recv() {
        match m {
            Message::Span(span) => {
                batch.push(*span);
                if batch.len() >= BATCH_SPANS {
                    export(exporter, batch, counters).await;
                }
            }
            Message::Flush(done) | Message::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    export(exporter, batch, counters).await;
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    counters: &TraceCounters,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(BATCH_SPANS));
    let n = spans.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {
            counters.exported.inc_by(n);
        }
        Ok(Err(e)) => failed(counters, n, &e),
        Err(_) => failed(counters, n, &OTelSdkError::Timeout(EXPORT_TIMEOUT)),
    }
}

fn failed(counters: &TraceCounters, spans: u64, error: &OTelSdkError) {
    counters.export_failures.inc();
    counters.dropped.inc_by(spans);
    tracing::debug!(error = %error, spans, "trace export failed");
}

/// The OTLP/HTTP transport on the gateway's own hyper client (see the module docs).
#[derive(Debug, Clone)]
pub struct HyperClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The collector's answer is read up to this size (it is a small protobuf message).
const MAX_RESPONSE: usize = 1024 * 1024;

impl HyperClient {
    #[must_use]
    pub fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(EXPORT_TIMEOUT));
        let connector = match tls {
            Ok(tls) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            // Only plain http:// then (the provider is built in; this does not happen).
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Self { client }
    }
}

impl Default for HyperClient {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = request.map(Full::new);
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(EXPORT_TIMEOUT, exchange)
            .await
            .map_err(|_| HttpError::from("OTLP export timed out"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// A collector that never answers.
    #[derive(Debug)]
    struct Stalled;

    impl SpanExporter for Stalled {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    /// A collector that refuses every export.
    #[derive(Debug)]
    struct Refusing;

    impl SpanExporter for Refusing {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("refused".into()))
        }
    }

    fn provider(processor: &BoundedBatch) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(processor.clone())
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_collector_costs_a_bounded_queue_and_counts_what_it_drops() {
        let counters = TraceCounters::default();
        let processor = BoundedBatch::start(Stalled, counters.clone());
        let tracer = provider(&processor).tracer("t");
        // Ending spans never waits: past the queue's places they are dropped and counted.
        for _ in 0..QUEUE_SPANS + 100 {
            drop(tracer.start("s"));
        }
        assert_eq!(counters.dropped.get(), 100);
        // The task takes a batch and its export hangs until the timeout: that batch is lost.
        tokio::time::sleep(EXPORT_TIMEOUT + BATCH_DELAY + Duration::from_secs(1)).await;
        assert!(counters.export_failures.get() >= 1);
        assert!(counters.dropped.get() >= 100 + BATCH_SPANS as u64);
        assert_eq!(counters.exported.get(), 0);
        // Shutdown waits no longer than asked.
        let before = tokio::time::Instant::now();
        processor.close(Duration::from_secs(2)).await;
        assert!(before.elapsed() <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_counted_as_a_failure_and_its_spans_as_dropped() {
        let counters = TraceCounters::default();
        let processor = BoundedBatch::start(Refusing, counters.clone());
        let tracer = provider(&processor).tracer("t");
        for _ in 0..10 {
            drop(tracer.start("s"));
        }
        processor.flush(Duration::from_secs(1)).await;
        assert_eq!(counters.export_failures.get(), 1);
        assert_eq!(counters.dropped.get(), 10);
    }
}
