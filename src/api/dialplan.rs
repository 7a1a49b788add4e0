//! The dialplan (admin): what is in force, and reloading it from its file without a restart.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, ApiError, AppState, Problem};
use crate::directory::Invalid;
use crate::routing::{Dialplan, LoadError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dialplan))
        .routes(routes!(reload_dialplan))
}

/// A summary of the dialplan in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct DialplanView {
    /// The file it was read from.
    pub path: String,
    /// Route names in the order they are tried, with their line in the file.
    pub routes: Vec<RouteView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RouteView {
    pub name: String,
    pub line: usize,
}

fn view(path: &std::path::Path, plan: &Dialplan) -> DialplanView {
    DialplanView {
        path: path.display().to_string(),
        routes: plan
            .routes()
            .iter()
            .map(|r| RouteView {
                name: r.name().to_owned(),
                line: r.line(),
            })
            .collect(),
    }
}

/// The dialplan in force.
#[utoipa::path(get, path = "/api/v1/dialplan", tag = "routing",
    responses((status = 200, body = DialplanView), (status = 403, body = Problem)))]
async fn get_dialplan(State(state): State<AppState>, _admin: Admin) -> Json<DialplanView> {
    Json(view(state.dialplan.path(), &state.dialplan.current()))
}

/// Re-read the dialplan file. Calls in progress keep the plan they started with; a file with
/// an error is refused (422, naming the line) and the running plan stays.
#[utoipa::path(post, path = "/api/v1/dialplan/reload", tag = "routing",
    responses((status = 200, body = DialplanView), (status = 422, body = Problem)))]
async fn reload_dialplan(State(state): State<AppState>, _admin: Admin) -> Response {
    match state.dialplan.reload() {
        Ok(plan) => {
            tracing::info!(path = %state.dialplan.path().display(), "dialplan reloaded");
            (StatusCode::OK, Json(view(state.dialplan.path(), &plan))).into_response()
        }
        Err(LoadError::Invalid { error, .. }) => ApiError::invalid(Invalid::new(
            match error.line {
                Some(l) => format!("line {l}"),
                None => "dialplan".into(),
            },
            error.message,
        ))
        .into_response(),
        Err(e @ LoadError::Read { .. }) => ApiError::internal(e.to_string()).into_response(),
    }
}
