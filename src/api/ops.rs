//! Operational routes: health, metrics and the OpenAPI document. None needs a token, so load
//! balancers and Prometheus can reach them; none reveals anything about a user.

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
    let body = state.metrics.render(&[
        ("switchboard_users", "Users in the directory.", users),
        ("switchboard_phones", "Phones in the directory.", phones),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
