//! Directory routes: users, phones, tokens (admin) and the `/me` view of a user's own phones and
//! locations, mirrored under `/users/{id}` for admin tokens.
//!
//! Ownership rule: a user token reaches only its own objects, and an object of another user is
//! reported exactly like one that does not exist (404), so ids cannot be probed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    created, Admin, ApiError, AppState, Auth, JsonBody, List, PageQuery, Path, Problem, Query,
};
use crate::directory::{
    Location, LocationPatch, NewLocation, NewPhone, NewUser, Phone, PhonePatch, Scope, User,
    UserPatch,
};
use crate::store::Page;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(create_phone, list_user_phones))
        .routes(routes!(get_phone, update_phone, delete_phone))
        .routes(routes!(create_token))
        .routes(routes!(me))
        .routes(routes!(me_phones))
        .routes(routes!(me_list_locations, me_create_location))
        .routes(routes!(
            me_get_location,
            me_update_location,
            me_delete_location
        ))
        .routes(routes!(me_get_current, me_put_current))
        .routes(routes!(user_list_locations, user_create_location))
        .routes(routes!(
            user_get_location,
            user_update_location,
            user_delete_location
        ))
        .routes(routes!(user_get_current, user_put_current))
}

type ApiResult<T> = Result<T, ApiError>;

/// A phone just created, with its SIP password: shown this once, never stored in clear.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneCreated {
    #[serde(flatten)]
    pub phone: Phone,
    pub password: String,
}

/// A phone with its registration state.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneView {
    #[serde(flatten)]
    pub phone: Phone,
    /// True when at least one contact is registered now.
    pub registered: bool,
    /// Registered contacts, best (highest q) first.
    pub contacts: Vec<ContactView>,
}

/// One registered contact of a phone.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    /// The Contact URI the phone registered.
    pub contact: String,
    /// Address the REGISTER really came from (what NAT made of it); calls go there.
    pub source: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    pub user_agent: Option<String>,
    /// Unix milliseconds when the binding expires unless refreshed.
    pub expires_at: i64,
    /// Seconds left.
    pub expires_in: u64,
    /// q-value in thousandths, when the phone gave one.
    pub q: Option<u16>,
}

fn view(state: &AppState, phone: Phone) -> PhoneView {
    let now = crate::store::now_ms().max(0) as u64;
    let contacts: Vec<ContactView> = state
        .registrar
        .bindings_for(&phone.sip_username)
        .into_iter()
        .filter(|b| b.phone_id == phone.id)
        .map(|b| ContactView {
            contact: b.contact.clone(),
            source: b.source.addr.to_string(),
            transport: match b.source.transport {
                crate::registrar::Transport::Udp => "udp",
                crate::registrar::Transport::Tcp => "tcp",
                crate::registrar::Transport::Tls => "tls",
            }
            .into(),
            user_agent: b.user_agent.clone(),
            expires_at: b.expires_at_ms as i64,
            expires_in: b.remaining_secs(now),
            q: b.q,
        })
        .collect();
    PhoneView {
        phone,
        registered: !contacts.is_empty(),
        contacts,
    }
}

fn view_list(state: &AppState, list: crate::store::Paged<Phone>) -> List<PhoneView> {
    List {
        next_cursor: list.next.map(|n| n.to_string()),
        items: list.items.into_iter().map(|p| view(state, p)).collect(),
    }
}

/// Body of `POST /users/{id}/tokens`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A note for operators, e.g. `groupware`.
    #[serde(default)]
    pub label: Option<String>,
}

/// A token just created: shown this once, stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub token: String,
    pub scope: Scope,
    pub user_id: i64,
}

/// The location a user is reached at. `location_id: null` is the built-in default, "all my
/// phones": every phone of the user, and no external number. A user who never chose a location,
/// or whose chosen location was deleted, is on the default.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentLocation {
    pub location_id: Option<i64>,
    pub name: String,
    pub default: bool,
    pub phones: Vec<i64>,
    pub numbers: Vec<String>,
}

/// Body of `PUT .../location`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectLocation {
    /// A location id of the user's, or `null` for the default ("all my phones").
    pub location_id: Option<i64>,
}

/// Name the API gives the built-in default location.
pub const DEFAULT_LOCATION_NAME: &str = "All my phones";

async fn existing_user(state: &AppState, id: i64) -> ApiResult<User> {
    state
        .store
        .get_user(id)
        .await?
        .ok_or_else(ApiError::not_found)
}

// ---------------------------------------------------------------------------------------------
// Users (admin)

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_user(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(new): JsonBody<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok(created(state.store.create_user(&new).await?))
}

/// List users, in creation order.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageQuery),
    responses((status = 200, body = List<User>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<List<User>>> {
    Ok(Json(state.store.list_users(q.page()?).await?.into()))
}

/// Get a user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 404, body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    Ok(Json(existing_user(&state, id).await?))
}

/// Change a user. `external_numbers` replaces the list; numbers dropped from it leave the
/// user's locations.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    request_body = UserPatch,
    responses((status = 200, body = User), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(patch): JsonBody<UserPatch>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.store.update_user(id, &patch).await?))
}

/// Delete a user, with their phones, locations and tokens.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_user(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Phones (admin)

/// Create a phone for a user. Without `password`, one is generated. The answer carries the
/// password once.
#[utoipa::path(post, path = "/api/v1/users/{id}/phones", tag = "phones", params(("id" = i64, Path)),
    request_body = NewPhone,
    responses((status = 201, body = PhoneCreated), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn create_phone(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(new): JsonBody<NewPhone>,
) -> ApiResult<(StatusCode, Json<PhoneCreated>)> {
    let (phone, password) = state.store.create_phone(id, &new, &state.realm).await?;
    Ok(created(PhoneCreated { phone, password }))
}

/// List a user's phones, each with its registration state.
#[utoipa::path(get, path = "/api/v1/users/{id}/phones", tag = "phones",
    params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = List<PhoneView>), (status = 404, body = Problem)))]
async fn list_user_phones(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<List<PhoneView>>> {
    existing_user(&state, id).await?;
    let list = state.store.list_phones(id, q.page()?).await?;
    Ok(Json(view_list(&state, list)))
}

/// Get a phone with its registration state.
#[utoipa::path(get, path = "/api/v1/phones/{id}", tag = "phones", params(("id" = i64, Path)),
    responses((status = 200, body = PhoneView), (status = 404, body = Problem)))]
async fn get_phone(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> ApiResult<Json<PhoneView>> {
    let phone = state
        .store
        .get_phone(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(view(&state, phone)))
}

/// Change a phone's name, or its credentials (a new `sip_username` needs a new `password`).
#[utoipa::path(patch, path = "/api/v1/phones/{id}", tag = "phones", params(("id" = i64, Path)),
    request_body = PhonePatch,
    responses((status = 200, body = Phone), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_phone(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(patch): JsonBody<PhonePatch>,
) -> ApiResult<Json<Phone>> {
    Ok(Json(
        state.store.update_phone(id, &patch, &state.realm).await?,
    ))
}

/// Delete a phone. It leaves every location; a location left empty is deleted.
#[utoipa::path(delete, path = "/api/v1/phones/{id}", tag = "phones", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_phone(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_phone(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Tokens (admin)

/// Create a user-scoped API token for a user. Admin tokens are made with the CLI.
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "tokens", params(("id" = i64, Path)),
    request_body(content = Option<NewToken>),
    responses((status = 201, body = TokenCreated), (status = 404, body = Problem)))]
async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    // The body is optional: an empty one means no label.
    let new: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let label = new.label.unwrap_or_default();
    if label.chars().count() > 128 {
        return Err(ApiError::invalid(crate::directory::Invalid::new(
            "label",
            "must be at most 128 characters",
        )));
    }
    let token = state
        .store
        .create_token(Scope::User, Some(id), &label)
        .await?;
    Ok(created(TokenCreated {
        token,
        scope: Scope::User,
        user_id: id,
    }))
}

// ---------------------------------------------------------------------------------------------
// Me

/// The user the token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "me",
    responses((status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<User>> {
    Ok(Json(existing_user(&state, auth.me()?).await?))
}

/// My phones, each with whether it is registered, its contacts, source address, transport,
/// user agent and expiry.
#[utoipa::path(get, path = "/api/v1/me/phones", tag = "me", params(PageQuery),
    responses((status = 200, body = List<PhoneView>), (status = 401, body = Problem)))]
async fn me_phones(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<List<PhoneView>>> {
    let uid = auth.me()?;
    let list = state.store.list_phones(uid, q.page()?).await?;
    Ok(Json(view_list(&state, list)))
}

// Shared bodies of the `/me/...` routes and their `/users/{id}/...` mirrors.

async fn list_locations(state: &AppState, uid: i64, page: Page) -> ApiResult<Json<List<Location>>> {
    Ok(Json(state.store.list_locations(uid, page).await?.into()))
}

async fn get_location(state: &AppState, uid: i64, lid: i64) -> ApiResult<Json<Location>> {
    Ok(Json(
        state
            .store
            .get_location(uid, lid)
            .await?
            .ok_or_else(ApiError::not_found)?,
    ))
}

async fn current(state: &AppState, uid: i64) -> ApiResult<Json<CurrentLocation>> {
    Ok(Json(match state.store.current_location(uid).await? {
        Some(loc) => CurrentLocation {
            location_id: Some(loc.id),
            name: loc.name,
            default: false,
            phones: loc.phones,
            numbers: loc.numbers,
        },
        None => {
            let mut phones = Vec::new();
            let mut page = Page {
                after: 0,
                limit: crate::store::MAX_PAGE,
            };
            loop {
                let p = state.store.list_phones(uid, page).await?;
                phones.extend(p.items.iter().map(|p| p.id));
                match p.next {
                    Some(n) => page.after = n,
                    None => break,
                }
            }
            CurrentLocation {
                location_id: None,
                name: DEFAULT_LOCATION_NAME.into(),
                default: true,
                phones,
                numbers: Vec::new(),
            }
        }
    }))
}

async fn select(
    state: &AppState,
    uid: i64,
    body: SelectLocation,
) -> ApiResult<Json<CurrentLocation>> {
    state
        .store
        .set_current_location(uid, body.location_id)
        .await?;
    current(state, uid).await
}

/// My locations.
#[utoipa::path(get, path = "/api/v1/me/locations", tag = "me", params(PageQuery),
    responses((status = 200, body = List<Location>), (status = 401, body = Problem)))]
async fn me_list_locations(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<List<Location>>> {
    list_locations(&state, auth.me()?, q.page()?).await
}

/// Create a location from my phones and external numbers.
#[utoipa::path(post, path = "/api/v1/me/locations", tag = "me", request_body = NewLocation,
    responses((status = 201, body = Location), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn me_create_location(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(new): JsonBody<NewLocation>,
) -> ApiResult<(StatusCode, Json<Location>)> {
    Ok(created(
        state.store.create_location(auth.me()?, &new).await?,
    ))
}

/// One of my locations.
#[utoipa::path(get, path = "/api/v1/me/locations/{location_id}", tag = "me",
    params(("location_id" = i64, Path)),
    responses((status = 200, body = Location), (status = 404, body = Problem)))]
async fn me_get_location(
    State(state): State<AppState>,
    auth: Auth,
    Path(lid): Path<i64>,
) -> ApiResult<Json<Location>> {
    get_location(&state, auth.me()?, lid).await
}

/// Change one of my locations.
#[utoipa::path(patch, path = "/api/v1/me/locations/{location_id}", tag = "me",
    params(("location_id" = i64, Path)), request_body = LocationPatch,
    responses((status = 200, body = Location), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn me_update_location(
    State(state): State<AppState>,
    auth: Auth,
    Path(lid): Path<i64>,
    JsonBody(patch): JsonBody<LocationPatch>,
) -> ApiResult<Json<Location>> {
    Ok(Json(
        state.store.update_location(auth.me()?, lid, &patch).await?,
    ))
}

/// Delete one of my locations. If it was selected, I am back on the default.
#[utoipa::path(delete, path = "/api/v1/me/locations/{location_id}", tag = "me",
    params(("location_id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn me_delete_location(
    State(state): State<AppState>,
    auth: Auth,
    Path(lid): Path<i64>,
) -> ApiResult<StatusCode> {
    state.store.delete_location(auth.me()?, lid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where I am reached now. `location_id: null` is the default, "all my phones".
#[utoipa::path(get, path = "/api/v1/me/location", tag = "me",
    responses((status = 200, body = CurrentLocation)))]
async fn me_get_current(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<CurrentLocation>> {
    current(&state, auth.me()?).await
}

/// Select my location (`{"location_id": 7}`), or the default (`{"location_id": null}`).
#[utoipa::path(put, path = "/api/v1/me/location", tag = "me", request_body = SelectLocation,
    responses((status = 200, body = CurrentLocation), (status = 422, body = Problem)))]
async fn me_put_current(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<SelectLocation>,
) -> ApiResult<Json<CurrentLocation>> {
    select(&state, auth.me()?, body).await
}

// ---------------------------------------------------------------------------------------------
// The same, for an admin acting for a user.

/// A user's locations (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/locations", tag = "users",
    params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = List<Location>), (status = 404, body = Problem)))]
async fn user_list_locations(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<List<Location>>> {
    existing_user(&state, id).await?;
    list_locations(&state, id, q.page()?).await
}

/// Create a location for a user (admin).
#[utoipa::path(post, path = "/api/v1/users/{id}/locations", tag = "users",
    params(("id" = i64, Path)), request_body = NewLocation,
    responses((status = 201, body = Location), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn user_create_location(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(new): JsonBody<NewLocation>,
) -> ApiResult<(StatusCode, Json<Location>)> {
    existing_user(&state, id).await?;
    Ok(created(state.store.create_location(id, &new).await?))
}

/// One of a user's locations (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/locations/{location_id}", tag = "users",
    params(("id" = i64, Path), ("location_id" = i64, Path)),
    responses((status = 200, body = Location), (status = 404, body = Problem)))]
async fn user_get_location(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, lid)): Path<(i64, i64)>,
) -> ApiResult<Json<Location>> {
    get_location(&state, id, lid).await
}

/// Change one of a user's locations (admin).
#[utoipa::path(patch, path = "/api/v1/users/{id}/locations/{location_id}", tag = "users",
    params(("id" = i64, Path), ("location_id" = i64, Path)), request_body = LocationPatch,
    responses((status = 200, body = Location), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn user_update_location(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, lid)): Path<(i64, i64)>,
    JsonBody(patch): JsonBody<LocationPatch>,
) -> ApiResult<Json<Location>> {
    Ok(Json(state.store.update_location(id, lid, &patch).await?))
}

/// Delete one of a user's locations (admin).
#[utoipa::path(delete, path = "/api/v1/users/{id}/locations/{location_id}", tag = "users",
    params(("id" = i64, Path), ("location_id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn user_delete_location(
    State(state): State<AppState>,
    _admin: Admin,
    Path((id, lid)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state.store.delete_location(id, lid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a user is reached now (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/location", tag = "users",
    params(("id" = i64, Path)),
    responses((status = 200, body = CurrentLocation), (status = 404, body = Problem)))]
async fn user_get_current(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> ApiResult<Json<CurrentLocation>> {
    current(&state, id).await
}

/// Select a user's location, or the default with `null` (admin).
#[utoipa::path(put, path = "/api/v1/users/{id}/location", tag = "users",
    params(("id" = i64, Path)), request_body = SelectLocation,
    responses((status = 200, body = CurrentLocation), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn user_put_current(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<SelectLocation>,
) -> ApiResult<Json<CurrentLocation>> {
    existing_user(&state, id).await?;
    select(&state, id, body).await
}
