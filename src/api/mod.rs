//! The HTTP API under `/api/v1`: JSON, bearer tokens, RFC 9457 errors, an OpenAPI document
//! generated from the handlers' own annotations (so a route cannot exist undocumented).
//!
//! This module owns HTTP concerns only: extracting and checking input shape, mapping principals
//! to the user acted for, and rendering results. Rules live in [`crate::directory`], SQL in
//! [`crate::store`].

mod bans;
mod calls;
mod dialplan;
mod directory;
mod error;
mod history;
mod ops;
mod trunks;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, Problem};

use crate::directory::Principal;
use crate::metrics::Metrics;
use crate::store::{Page, Paged, Store};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Digest realm that new phone passwords are bound to.
    pub realm: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// Live registrations and bans.
    pub registrar: crate::registrar::service::Handle,
    /// The dialplan in force, reloadable.
    pub dialplan: Arc<crate::routing::DialplanFile>,
    /// The SIP trunks and their registration status.
    pub trunks: Arc<crate::trunks::Trunks>,
    /// Live call events (SSE).
    pub events: Arc<crate::b2bua::events::Events>,
    /// Starting, following and hanging up click-to-calls.
    pub click_to_call: crate::b2bua::click_to_call::ClickToCall,
    /// The RTP relay, for its counters (none in tests of the API alone).
    pub relay: Option<crate::media::relay::Relay>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard API",
        description = "Admin and user API of the Switchboard PBX. Every route needs \
            `Authorization: Bearer <token>`. Admin tokens may use every route, including \
            `/users/{id}/...`, the mirror of each `/me/...` route, to act for a user. User tokens \
            may use `/me/...` only. Errors are RFC 9457 `application/problem+json`.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole HTTP service: API routes, the OpenAPI document, health and metrics.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(directory::routes())
        .merge(bans::routes())
        .merge(dialplan::routes())
        .merge(ops::routes())
        .merge(trunks::routes())
        .merge(history::routes())
        .merge(calls::routes())
        .split_for_parts();
    let doc = Arc::new(doc);
    api.merge(ops::unauthenticated(doc))
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Extractors

/// The verified bearer of the request's token.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Principal);

impl Auth {
    /// Admin scope required.
    pub fn admin(self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Admin => Ok(()),
            Principal::User(_) => Err(ApiError::forbidden("this route needs an admin token")),
        }
    }

    /// The user a `/me` route acts for.
    pub fn me(self) -> Result<i64, ApiError> {
        match self.0 {
            Principal::User(id) => Ok(id),
            Principal::Admin => Err(ApiError::forbidden(
                "an admin token has no /me; use /users/{id}/... to act for a user",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(ApiError::unauthorized)?;
        match state.store.verify_token(token).await? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// An admin token, checked before the body is read: a user token on an admin route is a 403
/// whatever it sent.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Auth::from_request_parts(parts, state).await?.admin()?;
        Ok(Admin)
    }
}

/// A JSON body. Unlike `axum::Json` it ignores `Content-Type` (some HTTP clients in the
/// groupware's stack forget it) and reports bad JSON as a 400 problem naming the field when serde
/// can tell.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            let msg = e.to_string();
            let err = ApiError::bad_request(format!("invalid JSON body: {msg}"));
            match field_in_serde_message(&msg) {
                Some(f) => err.with_field(f),
                None => err,
            }
        })
    }
}

/// serde names the field in backticks for missing and unknown fields.
fn field_in_serde_message(msg: &str) -> Option<String> {
    if !(msg.starts_with("missing field") || msg.starts_with("unknown field")) {
        return None;
    }
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// `axum::extract::Path` with a problem+json rejection. A path id that is not a number cannot
/// name anything, so it is a 404 like any other absent object.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::not_found())
    }
}

/// `axum::extract::Query` with a problem+json rejection.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let mut page = Page::default();
        if let Some(l) = &self.limit {
            page.limit = l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=crate::store::MAX_PAGE).contains(l))
                .ok_or_else(|| {
                    ApiError::bad_request("limit must be a whole number from 1 to 500")
                        .with_field("limit")
                })?;
        }
        if let Some(c) = &self.cursor {
            page.after = c.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
                ApiError::bad_request("cursor is not one this API returned").with_field("cursor")
            })?;
        }
        Ok(page)
    }
}

/// One page of a list. Items are in a stable order (creation order); pass `next_cursor` back as
/// `cursor` for the next page; it is `null` on the last one.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> From<Paged<T>> for List<T> {
    fn from(p: Paged<T>) -> Self {
        List {
            items: p.items,
            next_cursor: p.next.map(|n| n.to_string()),
        }
    }
}

/// Shorthand for `201 Created` with a JSON body.
pub fn created<T: Serialize>(value: T) -> (StatusCode, axum::Json<T>) {
    (StatusCode::CREATED, axum::Json(value))
}

#[cfg(test)]
mod tests {
    use super::field_in_serde_message;

    #[test]
    fn serde_field_names_are_extracted() {
        assert_eq!(
            field_in_serde_message("missing field `extension` at line 1 column 2").as_deref(),
            Some("extension")
        );
        assert_eq!(
            field_in_serde_message("unknown field `x`, expected one of `a`").as_deref(),
            Some("x")
        );
        assert_eq!(field_in_serde_message("expected value at line 1"), None);
    }
}
