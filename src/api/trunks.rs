//! SIP trunks (admin): each configured trunk with its registration status.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, AppState, Problem};
use crate::trunks::TrunkStatus;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_trunks))
}

/// The configured trunks, in configuration order, with where their registration stands.
#[utoipa::path(get, path = "/api/v1/trunks", tag = "trunks",
    responses((status = 200, body = Vec<TrunkStatus>), (status = 403, body = Problem)))]
async fn list_trunks(State(state): State<AppState>, _admin: Admin) -> Json<Vec<TrunkStatus>> {
    Json(state.trunks.statuses())
}
