//! The admin listener: `/healthz`, `/readyz`, `/metrics`. Never proxied, never authenticated;
//! bind it to loopback or a pod-internal address.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::gateway::SharedGateway;
use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    /// Read per probe, so readiness follows the key store a reload put in place.
    gateway: SharedGateway,
    metrics: Arc<Metrics>,
}

/// The admin routes.
pub fn router(gateway: SharedGateway, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { gateway, metrics })
}

/// 200 once every issuer has usable keys, and while it serves last-known-good keys during an
/// identity-provider outage; 503 naming the sources without keys otherwise.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let gateway = s.gateway.load();
    let missing: Vec<&str> = gateway
        .validator
        .keys()
        .issuers
        .iter()
        .filter(|i| !i.source.is_ready())
        .map(|i| i.source.name.as_str())
        .collect();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: no usable signing keys (not loaded yet, or older than entra.jwks_max_stale) for {}\n",
                missing.join(", ")
            ),
        )
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics
        .set_log_lines_dropped(crate::telemetry::dropped_lines());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}
