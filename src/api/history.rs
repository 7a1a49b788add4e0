//! Call history: `GET /api/v1/me/history` and its admin mirror `/users/{id}/history`.
//!
//! A user sees only their own entries (the store filters by the user; there is no route that
//! takes an entry id of someone else). The other party's name is the one recorded with the
//! call: the B2BUA takes it from the directory when the other party is a user, from the
//! caller's presentation otherwise. It is not looked up again here, so the name shown is the
//! name the list is sorted by, and a renamed user does not rewrite old calls (as on a phone
//! bill).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, ApiError, AppState, Auth, List, Path, Problem, Query};
use crate::store::{
    CallDirection, DirectionFilter, HistoryEntry, HistoryQuery, HistorySort, OutcomeFilter,
    PartyOutcome, SortOrder,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me_history))
        .routes(routes!(user_history))
}

/// `?direction=&outcome=&sort=&order=&limit=&cursor=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `incoming`, `outgoing` or `all` (default).
    pub direction: Option<String>,
    /// `answered`, `missed` or `all` (default).
    pub outcome: Option<String>,
    /// `time` (default), `number`, `name`, `duration` or `outcome`.
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (same sort and order).
    pub cursor: Option<String>,
}

impl HistoryParams {
    fn query(&self) -> Result<HistoryQuery, ApiError> {
        let mut q = HistoryQuery::default();
        if let Some(v) = &self.direction {
            q.direction = v.parse::<DirectionFilter>()?;
        }
        if let Some(v) = &self.outcome {
            q.outcome = v.parse::<OutcomeFilter>()?;
        }
        if let Some(v) = &self.sort {
            q.sort = v.parse::<HistorySort>()?;
        }
        if let Some(v) = &self.order {
            q.order = v.parse::<SortOrder>()?;
        }
        if let Some(l) = &self.limit {
            q.limit = l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=crate::store::MAX_PAGE as u32).contains(l))
                .ok_or_else(|| {
                    ApiError::bad_request("limit must be a whole number from 1 to 500")
                        .with_field("limit")
                })?;
        }
        q.cursor = self.cursor.clone();
        Ok(q)
    }
}

/// One call in my history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// The entry's id (`history_id` for a redial).
    pub id: i64,
    /// `incoming` or `outgoing`, from my side.
    #[schema(value_type = String)]
    pub direction: CallDirection,
    /// The other party: an extension, or a number outside.
    pub other_number: String,
    /// Their name when the call was made: the directory's for a user, else as the call
    /// presented it.
    pub other_name: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub answered_at: Option<i64>,
    /// Talk time in milliseconds (0 when not answered).
    pub duration_ms: i64,
    /// `answered`, `missed` (an incoming call nobody took), `no_answer`, `busy`, `failed` or
    /// `cancelled`.
    #[schema(value_type = String)]
    pub outcome: PartyOutcome,
    /// Which of my phones answered (incoming calls).
    pub answered_by_phone: Option<i64>,
    /// Which of my external numbers answered (incoming calls).
    pub answered_by_number: Option<String>,
    /// Placed with click-to-call.
    pub click_to_call: bool,
}

fn item(e: HistoryEntry) -> HistoryItem {
    let (phone, number) = match e.answered_by.as_deref() {
        Some(a) => match a.strip_prefix("phone:").map(str::parse::<i64>) {
            Some(Ok(id)) => (Some(id), None),
            _ => (None, Some(a.to_owned())),
        },
        None => (None, None),
    };
    HistoryItem {
        id: e.id,
        direction: e.direction,
        other_name: e.other_name,
        other_number: e.other_number,
        started_at: e.started_at,
        answered_at: e.answered_at,
        duration_ms: e.duration_ms,
        outcome: e.outcome,
        answered_by_phone: phone,
        answered_by_number: number,
        click_to_call: e.click_to_call,
    }
}

async fn history(
    state: &AppState,
    user: i64,
    params: &HistoryParams,
) -> Result<Json<List<HistoryItem>>, ApiError> {
    let page = state.store.call_history(user, &params.query()?).await?;
    Ok(Json(List {
        items: page.entries.into_iter().map(item).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// My call history, newest first by default; filter by direction and outcome, sort by any
/// column.
#[utoipa::path(get, path = "/api/v1/me/history", tag = "me", params(HistoryParams),
    responses((status = 200, body = List<HistoryItem>), (status = 401, body = Problem),
              (status = 422, body = Problem)))]
async fn me_history(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<HistoryParams>,
) -> Result<Json<List<HistoryItem>>, ApiError> {
    let uid = auth.me()?;
    history(&state, uid, &q).await
}

/// A user's call history (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/history", tag = "users",
    params(("id" = i64, Path), HistoryParams),
    responses((status = 200, body = List<HistoryItem>), (status = 404, body = Problem)))]
async fn user_history(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    Query(q): Query<HistoryParams>,
) -> Result<Json<List<HistoryItem>>, ApiError> {
    if state.store.get_user(id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    history(&state, id, &q).await
}
