//! Brute-force bans (admin): list them, lift one.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, ApiError, AppState, Path, Problem};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bans))
        .routes(routes!(remove_ban))
}

/// A source address refused after repeated failed authentications.
#[derive(Debug, Serialize, ToSchema)]
pub struct BanView {
    pub ip: String,
    /// Unix milliseconds when the ban ends.
    pub until_ms: i64,
    /// Failed authentications that led to it.
    pub failures: u32,
}

/// Bans in force.
#[utoipa::path(get, path = "/api/v1/bans", tag = "security",
    responses((status = 200, body = Vec<BanView>), (status = 403, body = Problem)))]
async fn list_bans(State(state): State<AppState>, _admin: Admin) -> Json<Vec<BanView>> {
    Json(
        state
            .registrar
            .bans()
            .into_iter()
            .map(|b| BanView {
                ip: b.ip.to_string(),
                until_ms: b.until_ms as i64,
                failures: b.failures,
            })
            .collect(),
    )
}

/// Lift a ban.
#[utoipa::path(delete, path = "/api/v1/bans/{ip}", tag = "security",
    params(("ip" = String, Path, description = "The banned address")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn remove_ban(
    State(state): State<AppState>,
    _admin: Admin,
    Path(ip): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ip: IpAddr = ip.parse().map_err(|_| ApiError::not_found())?;
    if state.registrar.unban(ip).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}
