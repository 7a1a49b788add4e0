//! Operational routes: health, metrics and the OpenAPI document. None needs a token, so load
//! balancers and Prometheus can reach them; none reveals anything about a user.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// Routes outside the documented API.
pub fn unauthenticated(doc: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    Router::new().route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
}

/// Counts responses by status class for `/metrics`.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.metrics.http_response(resp.status().as_u16());
    resp
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness and readiness: 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(Health { status: "ok" })),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "database unreachable",
                }),
            )
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let users = state.store.count_rows("users").await.unwrap_or(-1);
    let phones = state.store.count_rows("phones").await.unwrap_or(-1);
    let mut counters = Vec::new();
    let mut gauges = vec![
        ("switchboard_users", "Users in the directory.", users),
        ("switchboard_phones", "Phones in the directory.", phones),
    ];
    if let Some(relay) = &state.relay {
        let c = relay.counters();
        let read = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        counters.extend([
            (
                "switchboard_media_packets_total",
                "RTP and RTCP packets relayed (by the relay or, read every few seconds, the kernel).",
                read(&c.packets),
            ),
            (
                "switchboard_media_dropped_total",
                "Packets dropped by the relay: from a stranger, or with nowhere to go yet.",
                read(&c.dropped),
            ),
        ]);
        gauges.extend([
            (
                "switchboard_media_kernel_streams",
                "Streams forwarded by the kernel (media.kernel_forwarding).",
                i64::try_from(read(&c.kernel_streams)).unwrap_or(i64::MAX),
            ),
            (
                "switchboard_media_free_port_pairs",
                "RTP port pairs not in a call.",
                i64::try_from(relay.free_pairs()).unwrap_or(i64::MAX),
            ),
        ]);
    }
    let body = state.metrics.render(&counters, &gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
