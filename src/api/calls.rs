//! Click-to-call and live call events: `POST /api/v1/me/calls`, `GET`/`DELETE
//! /api/v1/me/calls/{id}`, their `/users/{id}/calls` mirrors for a service token, and the
//! Server-Sent Events streams `GET /api/v1/me/events` and (admin, every user)
//! `GET /api/v1/events`.
//!
//! A user reaches only their own click-to-calls (another user's id is a 404) and their own
//! events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, ApiError, AppState, Auth, JsonBody, Path, Problem};
use crate::b2bua::click_to_call::{CallView, StartError};
use crate::b2bua::events::CallEvent;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me_start))
        .routes(routes!(me_get, me_hang_up))
        .routes(routes!(user_start))
        .routes(routes!(user_get, user_hang_up))
        .routes(routes!(me_events))
        .routes(routes!(all_events))
}

/// What to call: a number or extension, or the other party of one of my history entries.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    /// A number or extension, as the user would dial it.
    pub to: Option<String>,
    /// Redial: the `id` of one of my history entries.
    pub history_id: Option<i64>,
}

async fn start(state: &AppState, user: i64, body: NewCall) -> Result<CallView, ApiError> {
    let to = match (body.to, body.history_id) {
        (Some(to), None) => to,
        (None, Some(h)) => {
            state
                .store
                .call_history_entry(user, h)
                .await?
                .ok_or_else(|| {
                    ApiError::unusable("history_id", "no such entry in your call history")
                })?
                .other_number
        }
        _ => {
            return Err(ApiError::unusable(
                "to",
                "give exactly one of `to` and `history_id`",
            ))
        }
    };
    state
        .click_to_call
        .start(user, &to)
        .await
        .map_err(|e| match e {
            StartError::Unreachable => ApiError::state_conflict(e.to_string()),
            StartError::NotDialable(_) => ApiError::unusable("to", e.to_string()),
            StartError::NoUser => ApiError::not_found(),
            StartError::Busy => ApiError::unavailable(e.to_string()),
            StartError::Store(s) => s.into(),
        })
}

/// Call a number for me: my current location rings first ("Call to <number>"); when I answer I
/// hear ringback while the number is dialled, and we are connected when it answers. Answers at
/// once with the call's id; `GET` it for its state.
#[utoipa::path(post, path = "/api/v1/me/calls", tag = "me", request_body = NewCall,
    responses((status = 202, body = CallView),
              (status = 409, body = Problem, description = "no phone of the location is reachable"),
              (status = 422, body = Problem, description = "not a number that can be dialled")))]
async fn me_start(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<NewCall>,
) -> Result<(StatusCode, Json<CallView>), ApiError> {
    let uid = auth.me()?;
    Ok((StatusCode::ACCEPTED, Json(start(&state, uid, body).await?)))
}

/// A click-to-call of mine.
#[utoipa::path(get, path = "/api/v1/me/calls/{call_id}", tag = "me",
    params(("call_id" = String, Path)),
    responses((status = 200, body = CallView), (status = 404, body = Problem)))]
async fn me_get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    let uid = auth.me()?;
    state
        .click_to_call
        .get(uid, &id)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Hang up a click-to-call of mine (both legs, in whatever state).
#[utoipa::path(delete, path = "/api/v1/me/calls/{call_id}", tag = "me",
    params(("call_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn me_hang_up(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let uid = auth.me()?;
    if state.click_to_call.hang_up(uid, &id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

/// Click-to-call for a user (admin or service token).
#[utoipa::path(post, path = "/api/v1/users/{id}/calls", tag = "users",
    params(("id" = i64, Path)), request_body = NewCall,
    responses((status = 202, body = CallView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn user_start(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<NewCall>,
) -> Result<(StatusCode, Json<CallView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(start(&state, id, body).await?)))
}

/// A user's click-to-call (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/calls/{call_id}", tag = "users",
    params(("id" = i64, Path), ("call_id" = String, Path)),
    responses((status = 200, body = CallView), (status = 404, body = Problem)))]
async fn user_get(
    State(state): State<AppState>,
    _admin: Admin,
    Path((uid, id)): Path<(i64, String)>,
) -> Result<Json<CallView>, ApiError> {
    state
        .click_to_call
        .get(uid, &id)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// Hang up a user's click-to-call (admin).
#[utoipa::path(delete, path = "/api/v1/users/{id}/calls/{call_id}", tag = "users",
    params(("id" = i64, Path), ("call_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn user_hang_up(
    State(state): State<AppState>,
    _admin: Admin,
    Path((uid, id)): Path<(i64, String)>,
) -> Result<StatusCode, ApiError> {
    if state.click_to_call.hang_up(uid, &id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

/// My calls as they happen (Server-Sent Events): `ringing`, `answered`, `ended` (with the
/// outcome), each with the call's id, direction and the other party. Reconnect with
/// `Last-Event-ID` to get what was missed (events are kept for ten minutes, at most the last
/// 100,000 of all users'). When some of it is no longer kept (older, or from before a restart
/// of the server), the stream starts with a `reset` event: re-read the history.
#[utoipa::path(get, path = "/api/v1/me/events", tag = "me",
    responses((status = 200, content_type = "text/event-stream", body = CallEvent),
              (status = 401, body = Problem)))]
async fn me_events(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let uid = auth.me()?;
    Ok(stream_events(&state, &headers, move |e| e.user_id == uid))
}

/// Every user's calls as they happen (admin), as `/me/events` shows one user's (with the same
/// replay after `Last-Event-ID`, and the same `reset` when some of it is no longer kept).
#[utoipa::path(get, path = "/api/v1/events", tag = "calls",
    responses((status = 200, content_type = "text/event-stream", body = CallEvent),
              (status = 403, body = Problem)))]
async fn all_events(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    stream_events(&state, &headers, |_| true)
}

fn stream_events(
    state: &AppState,
    headers: &HeaderMap,
    wanted: impl Fn(&CallEvent) -> bool + Send + Sync + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (replay, rx) = state.events.subscribe(after, &wanted);
    let last = replay.events.last().map(|e| e.id).or(after).unwrap_or(0);
    // Said first, and without an id (the client's Last-Event-ID stays as it was): some of what
    // followed its Last-Event-ID is no longer kept, so the replay may lack some of its events.
    let reset = replay
        .incomplete
        .then(|| Ok(Event::default().event("reset").data(r#"{"event":"reset"}"#)));
    let replayed = stream::iter(
        reset
            .into_iter()
            .chain(replay.events.into_iter().map(|e| Ok(sse_event(&e)))),
    );
    let live = stream::unfold(
        (rx, last, wanted),
        |(mut rx, mut last, wanted)| async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.id > last && wanted(&e) => {
                        last = e.id;
                        return Some((Ok(sse_event(&e)), (rx, last, wanted)));
                    }
                    Ok(_) => continue,
                    // Fell behind the bus: the client reconnects with Last-Event-ID and gets
                    // the rest from the replay buffer.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream::StreamExt::chain(replayed, live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn sse_event(e: &CallEvent) -> Event {
    let kind = match e.kind {
        crate::b2bua::events::EventKind::Ringing => "ringing",
        crate::b2bua::events::EventKind::Answered => "answered",
        crate::b2bua::events::EventKind::Ended => "ended",
    };
    Event::default()
        .id(e.id.to_string())
        .event(kind)
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}
