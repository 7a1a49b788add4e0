//! The HTTP API, route by route, on SQLite and PostgreSQL: success paths, every error class
//! (400/401/403/404/409/422) and the rule that a user token never reaches another user's objects.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::{Db, TestDb};
use switchboard::api::{self, AppState};
use switchboard::directory::Scope;
use switchboard::metrics::Metrics;
use switchboard::store::Store;

struct Api {
    app: Router,
    store: Store,
    admin: String,
    _db: TestDb,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
    text: String,
}

impl Reply {
    /// Asserts an RFC 9457 problem with this status (and field, when given).
    fn problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status, "{}", self.text);
        assert!(
            self.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:switchboard:problem:")),
            "{}",
            self.text
        );
        if let Some(f) = field {
            assert_eq!(self.body["field"], f, "{}", self.text);
        }
    }
}

impl Api {
    async fn new(db: Db) -> Api {
        let tdb = TestDb::new(db).await;
        let store = tdb.store().await;
        let admin = store
            .create_token(Scope::Admin, None, "test")
            .await
            .unwrap();
        let config = switchboard::config::Config::from_toml("").unwrap();
        let registrar = switchboard::registrar::service::Handle::idle(store.clone(), &config)
            .await
            .unwrap();
        let dialplan = Arc::new(
            switchboard::routing::DialplanFile::open(
                std::path::Path::new(switchboard::config::DEFAULT_DIALPLAN_PATH),
                true,
            )
            .unwrap(),
        );
        let trunks = Arc::new(switchboard::trunks::Trunks::new(&config.trunks, None));
        // The B2BUA without SIP sockets: the API's history and event routes need its handles.
        let (calls, _work) = switchboard::b2bua::service::Calls::new(
            switchboard::b2bua::service::CallsConfig {
                realm: "test.example".into(),
                algorithms: vec![switchboard::sip::auth::Algorithm::Md5],
                no_answer: std::time::Duration::from_secs(30),
                no_answer_status: 480,
                media_timeout: None,
                tones: Default::default(),
                unreachable_prompt: None,
            },
            switchboard::b2bua::service::Routing {
                store: store.clone(),
                registrar: registrar.clone(),
                dialplan: dialplan.clone(),
                trunks: trunks.clone(),
                transports: None,
            },
            &[],
            None,
            1,
        );
        let app = api::router(AppState {
            store: store.clone(),
            realm: Arc::from("test.example"),
            metrics: Arc::new(Metrics::default()),
            registrar,
            dialplan,
            trunks,
            events: calls.events(),
            click_to_call: calls.click_to_call(),
            relay: None,
        });
        Api {
            app,
            store,
            admin,
            _db: tdb,
        }
    }

    async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            text,
        }
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        self.raw(method, path, Some(token), body).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Creates a user and returns its id.
    async fn user(&self, ext: &str, numbers: &[&str]) -> i64 {
        let numbers: Vec<Value> = numbers
            .iter()
            .map(|n| json!({"label": "mobile", "number": n}))
            .collect();
        let r = self
            .post(
                "/api/v1/users",
                &self.admin,
                json!({"extension": ext, "display_name": format!("User {ext}"),
                       "email": format!("u{ext}@example.com"), "external_numbers": numbers}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    async fn phone(&self, user: i64, username: &str) -> i64 {
        let r = self
            .post(
                &format!("/api/v1/users/{user}/phones"),
                &self.admin,
                json!({"sip_username": username, "name": "Desk"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    async fn user_token(&self, user: i64) -> String {
        let r = self
            .post(
                &format!("/api/v1/users/{user}/tokens"),
                &self.admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"].as_str().unwrap().to_owned()
    }
}

on_both_databases!(
    users_crud,
    user_errors,
    authentication_and_scope,
    pagination_is_stable,
    phones_crud,
    tokens,
    locations_for_me,
    locations_are_private,
    current_location,
    membership_follows_phones_and_numbers,
    admin_acts_for_a_user,
    data_survives_reopening,
    call_history,
    click_to_call_routes,
);

async fn users_crud(db: Db) {
    let api = Api::new(db).await;
    let r = api
        .post(
            "/api/v1/users",
            &api.admin,
            json!({"extension": "100", "display_name": "Alice", "email": "alice@example.com",
                   "fax_number": "+4930555", "external_numbers": [
                       {"label": "mobile", "number": "+491701111"},
                       {"label": "home", "number": "030222"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["extension"], "100");
    assert_eq!(r.body["fax_number"], "+4930555");
    assert_eq!(r.body["external_numbers"][1]["number"], "030222");

    let r = api.get(&format!("/api/v1/users/{id}"), &api.admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["display_name"], "Alice");
    assert_eq!(r.body["external_numbers"].as_array().unwrap().len(), 2);

    let r = api
        .patch(
            &format!("/api/v1/users/{id}"),
            &api.admin,
            json!({"display_name": "Alice B.", "fax_number": null,
                   "external_numbers": [{"label": "mobile", "number": "+491709999"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["display_name"], "Alice B.");
    assert_eq!(r.body["extension"], "100");
    assert_eq!(r.body["fax_number"], Value::Null);
    assert_eq!(
        r.body["external_numbers"],
        json!([{"label": "mobile", "number": "+491709999"}])
    );

    let r = api.get("/api/v1/users", &api.admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);

    let r = api.delete(&format!("/api/v1/users/{id}"), &api.admin).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    api.get(&format!("/api/v1/users/{id}"), &api.admin)
        .await
        .problem(404, None);
    api.delete(&format!("/api/v1/users/{id}"), &api.admin)
        .await
        .problem(404, None);
    api.patch(
        &format!("/api/v1/users/{id}"),
        &api.admin,
        json!({"display_name": "x"}),
    )
    .await
    .problem(404, None);
}

async fn user_errors(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &[]).await;
    let new = |ext: &str| json!({"extension": ext, "display_name": "B", "email": "b@example.com"});

    // 409: duplicates.
    api.post("/api/v1/users", &api.admin, new("100"))
        .await
        .problem(409, Some("extension"));
    let b = api.user("101", &[]).await;
    api.patch(
        &format!("/api/v1/users/{b}"),
        &api.admin,
        json!({"extension": "100"}),
    )
    .await
    .problem(409, Some("extension"));
    api.patch(
        &format!("/api/v1/users/{a}"),
        &api.admin,
        json!({"fax_number": "+4930777"}),
    )
    .await;
    api.patch(
        &format!("/api/v1/users/{b}"),
        &api.admin,
        json!({"fax_number": "+4930777"}),
    )
    .await
    .problem(409, Some("fax_number"));

    // 422: semantic errors, naming the field.
    api.post("/api/v1/users", &api.admin, new("10a"))
        .await
        .problem(422, Some("extension"));
    api.post(
        "/api/v1/users",
        &api.admin,
        json!({"extension": "102", "display_name": "C", "email": "nope"}),
    )
    .await
    .problem(422, Some("email"));
    api.post(
        "/api/v1/users",
        &api.admin,
        json!({"extension": "102", "display_name": "C", "email": "c@example.com",
               "external_numbers": [{"label": "m", "number": "+49 170"}]}),
    )
    .await
    .problem(422, Some("external_numbers[0].number"));
    api.post(
        "/api/v1/users",
        &api.admin,
        json!({"extension": "102", "display_name": " ", "email": "c@example.com"}),
    )
    .await
    .problem(422, Some("display_name"));

    // 400: not JSON, wrong shape, missing or unknown fields.
    api.raw(
        Method::POST,
        "/api/v1/users",
        Some(&api.admin),
        Body::from("{not json"),
    )
    .await
    .problem(400, None);
    api.post(
        "/api/v1/users",
        &api.admin,
        json!({"display_name": "C", "email": "c@example.com"}),
    )
    .await
    .problem(400, Some("extension"));
    api.post(
        "/api/v1/users",
        &api.admin,
        json!({"extension": "103", "display_name": "C", "email": "c@example.com", "colour": 1}),
    )
    .await
    .problem(400, Some("colour"));

    // Nothing half-written by the failures.
    let r = api.get("/api/v1/users", &api.admin).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{}", r.text);
}

async fn authentication_and_scope(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &[]).await;
    let token = api.user_token(a).await;

    // 401: no token, unknown token, wrong scheme.
    api.raw(Method::GET, "/api/v1/users", None, Body::empty())
        .await
        .problem(401, None);
    api.get("/api/v1/users", "sb_0000").await.problem(401, None);
    let r = api
        .raw(Method::GET, "/api/v1/me", None, Body::empty())
        .await;
    r.problem(401, None);

    // 403: a user token on every admin route.
    let admin_routes: &[(Method, String)] = &[
        (Method::GET, "/api/v1/users".into()),
        (Method::POST, "/api/v1/users".into()),
        (Method::GET, format!("/api/v1/users/{a}")),
        (Method::PATCH, format!("/api/v1/users/{a}")),
        (Method::DELETE, format!("/api/v1/users/{a}")),
        (Method::GET, format!("/api/v1/users/{a}/phones")),
        (Method::POST, format!("/api/v1/users/{a}/phones")),
        (Method::POST, format!("/api/v1/users/{a}/tokens")),
        (Method::GET, "/api/v1/phones/1".into()),
        (Method::PATCH, "/api/v1/phones/1".into()),
        (Method::DELETE, "/api/v1/phones/1".into()),
        (Method::GET, format!("/api/v1/users/{a}/locations")),
        (Method::POST, format!("/api/v1/users/{a}/locations")),
        (Method::GET, format!("/api/v1/users/{a}/locations/1")),
        (Method::PATCH, format!("/api/v1/users/{a}/locations/1")),
        (Method::DELETE, format!("/api/v1/users/{a}/locations/1")),
        (Method::GET, format!("/api/v1/users/{a}/location")),
        (Method::PUT, format!("/api/v1/users/{a}/location")),
    ];
    for (m, p) in admin_routes {
        let body = if *m == Method::GET || *m == Method::DELETE {
            None
        } else {
            Some(json!({}))
        };
        let r = api.call(m.clone(), p, &token, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {p}: {}", r.text);
        r.problem(403, None);
    }

    // 403: an admin token has no /me.
    api.get("/api/v1/me", &api.admin).await.problem(403, None);

    // The user token works on /me.
    let r = api.get("/api/v1/me", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], a);

    // A deleted user's token dies with the user.
    api.delete(&format!("/api/v1/users/{a}"), &api.admin).await;
    api.get("/api/v1/me", &token).await.problem(401, None);
}

async fn pagination_is_stable(db: Db) {
    let api = Api::new(db).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(api.user(&format!("{}", 200 + i), &[]).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=3&cursor={c}"),
            None => "/api/v1/users?limit=3".into(),
        };
        let r = api.get(&path, &api.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        pages += 1;
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|u| u["id"].as_i64().unwrap()));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);

    api.get("/api/v1/users?limit=0", &api.admin)
        .await
        .problem(400, Some("limit"));
    api.get("/api/v1/users?limit=501", &api.admin)
        .await
        .problem(400, Some("limit"));
    api.get("/api/v1/users?cursor=abc", &api.admin)
        .await
        .problem(400, Some("cursor"));
}

async fn phones_crud(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &[]).await;

    // Generated password, returned once.
    let r = api
        .post(
            &format!("/api/v1/users/{a}/phones"),
            &api.admin,
            json!({"sip_username": "alice-desk", "name": "Desk phone"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let desk = r.body["id"].as_i64().unwrap();
    let password = r.body["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16);
    assert_eq!(r.body["user_id"], a);

    // The stored digest is the one for that password, and the password itself is nowhere.
    let creds = api
        .store
        .phone_credentials("alice-desk")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        creds.ha1_md5,
        switchboard::sip::auth::ha1(
            switchboard::sip::auth::Algorithm::Md5,
            "alice-desk",
            "test.example",
            &password
        )
    );
    let r = api.get(&format!("/api/v1/phones/{desk}"), &api.admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("password").is_none(), "{}", r.text);

    // Chosen password.
    let r = api
        .post(
            &format!("/api/v1/users/{a}/phones"),
            &api.admin,
            json!({"sip_username": "alice-soft", "name": "Softphone", "password": "correct-horse"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["password"], "correct-horse");
    let soft = r.body["id"].as_i64().unwrap();

    let r = api
        .get(&format!("/api/v1/users/{a}/phones"), &api.admin)
        .await;
    let names: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sip_username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice-desk", "alice-soft"]);

    // Errors.
    api.post(
        &format!("/api/v1/users/{a}/phones"),
        &api.admin,
        json!({"sip_username": "alice-desk", "name": "Again"}),
    )
    .await
    .problem(409, Some("sip_username"));
    api.post(
        &format!("/api/v1/users/{a}/phones"),
        &api.admin,
        json!({"sip_username": "bad name", "name": "x"}),
    )
    .await
    .problem(422, Some("sip_username"));
    api.post(
        &format!("/api/v1/users/{a}/phones"),
        &api.admin,
        json!({"sip_username": "ok", "name": "x", "password": "short"}),
    )
    .await
    .problem(422, Some("password"));
    api.post(
        "/api/v1/users/999999/phones",
        &api.admin,
        json!({"sip_username": "nobody", "name": "x"}),
    )
    .await
    .problem(404, None);
    api.get("/api/v1/users/999999/phones", &api.admin)
        .await
        .problem(404, None);
    api.get("/api/v1/phones/999999", &api.admin)
        .await
        .problem(404, None);
    api.get("/api/v1/phones/not-a-number", &api.admin)
        .await
        .problem(404, None);

    // PATCH: rename; new username needs a new password; then both.
    let r = api
        .patch(
            &format!("/api/v1/phones/{soft}"),
            &api.admin,
            json!({"name": "Laptop"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "Laptop");
    api.patch(
        &format!("/api/v1/phones/{soft}"),
        &api.admin,
        json!({"sip_username": "alice-laptop"}),
    )
    .await
    .problem(422, Some("password"));
    api.patch(
        &format!("/api/v1/phones/{soft}"),
        &api.admin,
        json!({"sip_username": "alice-desk", "password": "another-pass"}),
    )
    .await
    .problem(409, Some("sip_username"));
    let r = api
        .patch(
            &format!("/api/v1/phones/{soft}"),
            &api.admin,
            json!({"sip_username": "alice-laptop", "password": "another-pass"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["sip_username"], "alice-laptop");
    assert!(api
        .store
        .phone_credentials("alice-soft")
        .await
        .unwrap()
        .is_none());
    api.patch("/api/v1/phones/999999", &api.admin, json!({"name": "x"}))
        .await
        .problem(404, None);

    // DELETE.
    let r = api
        .delete(&format!("/api/v1/phones/{desk}"), &api.admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    api.get(&format!("/api/v1/phones/{desk}"), &api.admin)
        .await
        .problem(404, None);
    api.delete(&format!("/api/v1/phones/{desk}"), &api.admin)
        .await
        .problem(404, None);

    // /me/phones shows only the user's own.
    let b = api.user("101", &[]).await;
    api.phone(b, "bob").await;
    let token = api.user_token(a).await;
    let r = api.get("/api/v1/me/phones", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sip_username"], "alice-laptop");
}

async fn tokens(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &[]).await;
    let r = api
        .post(
            &format!("/api/v1/users/{a}/tokens"),
            &api.admin,
            json!({"label": "groupware"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["scope"], "user");
    let token = r.body["token"].as_str().unwrap().to_owned();

    // An empty body is fine too.
    let r = api
        .raw(
            Method::POST,
            &format!("/api/v1/users/{a}/tokens"),
            Some(&api.admin),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    api.post("/api/v1/users/999999/tokens", &api.admin, json!({}))
        .await
        .problem(404, None);

    // Hashed at rest: the token is not in the database, its SHA-256 is.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(api.store.pool())
        .await
        .unwrap();
    assert!(!stored.iter().any(|h| h.contains(&token[3..])));
    let expected = switchboard::sip::auth::Algorithm::Sha256.hash_hex(token.as_bytes());
    assert!(stored.contains(&expected));

    let r = api.get("/api/v1/me", &token).await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn locations_for_me(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111", "+4930222"]).await;
    let desk = api.phone(a, "alice-desk").await;
    let soft = api.phone(a, "alice-soft").await;
    let t = api.user_token(a).await;

    let r = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Office", "phones": [desk, soft], "numbers": ["+491701111"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let office = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["phones"], json!([desk, soft]));
    assert_eq!(r.body["numbers"], json!(["+491701111"]));

    let r = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Home", "numbers": ["+4930222"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let home = r.body["id"].as_i64().unwrap();

    let r = api.get("/api/v1/me/locations", &t).await;
    let names: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Office", "Home"]);

    let r = api.get(&format!("/api/v1/me/locations/{home}"), &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["numbers"], json!(["+4930222"]));

    // 409 duplicate name; 422 empty, malformed number, number not mine, unknown phone.
    api.post(
        "/api/v1/me/locations",
        &t,
        json!({"name": "Office", "phones": [desk]}),
    )
    .await
    .problem(409, Some("name"));
    api.post("/api/v1/me/locations", &t, json!({"name": "Empty"}))
        .await
        .problem(422, Some("phones"));
    api.post(
        "/api/v1/me/locations",
        &t,
        json!({"name": "X", "numbers": ["12ab"]}),
    )
    .await
    .problem(422, Some("numbers[0]"));
    api.post(
        "/api/v1/me/locations",
        &t,
        json!({"name": "X", "numbers": ["+4930999"]}),
    )
    .await
    .problem(422, Some("numbers[0]"));
    api.post(
        "/api/v1/me/locations",
        &t,
        json!({"name": "X", "phones": [desk, 999999]}),
    )
    .await
    .problem(422, Some("phones[1]"));
    api.post(
        "/api/v1/me/locations",
        &t,
        json!({"name": "X", "phones": [desk, desk]}),
    )
    .await
    .problem(422, Some("phones[1]"));

    // PATCH: rename, replace members; rename onto an existing name is 409; emptying is 422.
    let r = api
        .patch(
            &format!("/api/v1/me/locations/{office}"),
            &t,
            json!({"name": "Work", "numbers": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Work");
    assert_eq!(r.body["phones"], json!([desk, soft]));
    assert_eq!(r.body["numbers"], json!([]));
    api.patch(
        &format!("/api/v1/me/locations/{office}"),
        &t,
        json!({"name": "Home"}),
    )
    .await
    .problem(409, Some("name"));
    api.patch(
        &format!("/api/v1/me/locations/{home}"),
        &t,
        json!({"numbers": []}),
    )
    .await
    .problem(422, Some("phones"));

    // DELETE.
    let r = api
        .delete(&format!("/api/v1/me/locations/{home}"), &t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    api.get(&format!("/api/v1/me/locations/{home}"), &t)
        .await
        .problem(404, None);
    api.delete(&format!("/api/v1/me/locations/{home}"), &t)
        .await
        .problem(404, None);
}

async fn locations_are_private(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111"]).await;
    let b = api.user("101", &["+491702222"]).await;
    let a_desk = api.phone(a, "alice").await;
    let b_desk = api.phone(b, "bob").await;
    let ta = api.user_token(a).await;
    let tb = api.user_token(b).await;

    let r = api
        .post(
            "/api/v1/me/locations",
            &ta,
            json!({"name": "Office", "phones": [a_desk]}),
        )
        .await;
    let a_loc = r.body["id"].as_i64().unwrap();

    // B cannot read, change, delete or select A's location: it looks absent.
    api.get(&format!("/api/v1/me/locations/{a_loc}"), &tb)
        .await
        .problem(404, None);
    api.patch(
        &format!("/api/v1/me/locations/{a_loc}"),
        &tb,
        json!({"name": "Mine now"}),
    )
    .await
    .problem(404, None);
    api.delete(&format!("/api/v1/me/locations/{a_loc}"), &tb)
        .await
        .problem(404, None);
    api.put("/api/v1/me/location", &tb, json!({"location_id": a_loc}))
        .await
        .problem(422, Some("location_id"));
    // ...and the answer is the same as for an id that does not exist at all.
    let absent = api
        .get(&format!("/api/v1/me/locations/{}", a_loc + 1000), &tb)
        .await;
    let foreign = api.get(&format!("/api/v1/me/locations/{a_loc}"), &tb).await;
    assert_eq!(absent.text, foreign.text);

    // B cannot put A's phone or number into a location of B's.
    api.post(
        "/api/v1/me/locations",
        &tb,
        json!({"name": "Sneaky", "phones": [b_desk, a_desk]}),
    )
    .await
    .problem(422, Some("phones[1]"));
    api.post(
        "/api/v1/me/locations",
        &tb,
        json!({"name": "Sneaky", "numbers": ["+491701111"]}),
    )
    .await
    .problem(422, Some("numbers[0]"));

    // B's lists show nothing of A's.
    let r = api.get("/api/v1/me/locations", &tb).await;
    assert_eq!(r.body["items"], json!([]));
    let r = api.get("/api/v1/me/phones", &tb).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    // A's location is untouched.
    let r = api.get(&format!("/api/v1/me/locations/{a_loc}"), &ta).await;
    assert_eq!(r.body["name"], "Office");
}

async fn current_location(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111"]).await;
    let desk = api.phone(a, "alice-desk").await;
    let soft = api.phone(a, "alice-soft").await;
    let t = api.user_token(a).await;

    // Never chose: the default, all my phones.
    let r = api.get("/api/v1/me/location", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["location_id"], Value::Null);
    assert_eq!(r.body["default"], true);
    assert_eq!(r.body["phones"], json!([desk, soft]));

    let mobile = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Away", "numbers": ["+491701111"]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let r = api
        .put("/api/v1/me/location", &t, json!({"location_id": mobile}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["location_id"], mobile);
    assert_eq!(r.body["name"], "Away");
    assert_eq!(r.body["numbers"], json!(["+491701111"]));
    assert_eq!(
        api.get("/api/v1/me/location", &t).await.body["location_id"],
        mobile
    );

    // Back to the default with null.
    let r = api
        .put("/api/v1/me/location", &t, json!({"location_id": null}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["default"], true);

    // Deleting the selected location falls back to the default.
    api.put("/api/v1/me/location", &t, json!({"location_id": mobile}))
        .await;
    api.delete(&format!("/api/v1/me/locations/{mobile}"), &t)
        .await;
    let r = api.get("/api/v1/me/location", &t).await;
    assert_eq!(r.body["location_id"], Value::Null);
    assert_eq!(r.body["default"], true);

    // Bad bodies.
    api.put("/api/v1/me/location", &t, json!({"location_id": 999999}))
        .await
        .problem(422, Some("location_id"));
    api.put("/api/v1/me/location", &t, json!({"location": 1}))
        .await
        .problem(400, None);
}

async fn membership_follows_phones_and_numbers(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111", "+4930222"]).await;
    let desk = api.phone(a, "alice-desk").await;
    let soft = api.phone(a, "alice-soft").await;
    let t = api.user_token(a).await;
    let both = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Both", "phones": [desk, soft]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let only_desk = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Desk", "phones": [desk]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let mobile = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Mobile", "phones": [soft], "numbers": ["+491701111"]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    api.put("/api/v1/me/location", &t, json!({"location_id": only_desk}))
        .await;

    // The desk phone goes: it leaves "Both"; "Desk" is left empty and goes too, and the user is
    // back on the default.
    api.delete(&format!("/api/v1/phones/{desk}"), &api.admin)
        .await;
    let r = api.get(&format!("/api/v1/me/locations/{both}"), &t).await;
    assert_eq!(r.body["phones"], json!([soft]));
    api.get(&format!("/api/v1/me/locations/{only_desk}"), &t)
        .await
        .problem(404, None);
    assert_eq!(
        api.get("/api/v1/me/location", &t).await.body["default"],
        true
    );

    // A number the user no longer has leaves the location.
    api.patch(
        &format!("/api/v1/users/{a}"),
        &api.admin,
        json!({"external_numbers": [{"label": "home", "number": "+4930222"}]}),
    )
    .await;
    let r = api.get(&format!("/api/v1/me/locations/{mobile}"), &t).await;
    assert_eq!(r.body["numbers"], json!([]));
    assert_eq!(r.body["phones"], json!([soft]));
}

async fn admin_acts_for_a_user(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111"]).await;
    let desk = api.phone(a, "alice-desk").await;
    let base = format!("/api/v1/users/{a}");

    let r = api
        .post(
            &format!("{base}/locations"),
            &api.admin,
            json!({"name": "Office", "phones": [desk]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let lid = r.body["id"].as_i64().unwrap();
    let r = api.get(&format!("{base}/locations"), &api.admin).await;
    assert_eq!(r.body["items"][0]["id"], lid);
    let r = api
        .get(&format!("{base}/locations/{lid}"), &api.admin)
        .await;
    assert_eq!(r.body["name"], "Office");
    let r = api
        .patch(
            &format!("{base}/locations/{lid}"),
            &api.admin,
            json!({"numbers": ["+491701111"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["numbers"], json!(["+491701111"]));
    let r = api
        .put(
            &format!("{base}/location"),
            &api.admin,
            json!({"location_id": lid}),
        )
        .await;
    assert_eq!(r.body["location_id"], lid);
    let r = api.get(&format!("{base}/location"), &api.admin).await;
    assert_eq!(r.body["name"], "Office");

    // What the admin did is what the user sees.
    let t = api.user_token(a).await;
    assert_eq!(
        api.get("/api/v1/me/location", &t).await.body["location_id"],
        lid
    );

    let r = api
        .delete(&format!("{base}/locations/{lid}"), &api.admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Another user's location through the wrong user id is absent.
    let b = api.user("101", &[]).await;
    let bp = api.phone(b, "bob").await;
    let blid = api
        .post(
            &format!("/api/v1/users/{b}/locations"),
            &api.admin,
            json!({"name": "B", "phones": [bp]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    api.get(&format!("{base}/locations/{blid}"), &api.admin)
        .await
        .problem(404, None);

    // Unknown users are 404 on every mirror route.
    for path in ["locations", "location", "phones"] {
        api.get(&format!("/api/v1/users/999999/{path}"), &api.admin)
            .await
            .problem(404, None);
    }
    api.put(
        "/api/v1/users/999999/location",
        &api.admin,
        json!({"location_id": null}),
    )
    .await
    .problem(404, None);
}

async fn data_survives_reopening(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("100", &["+491701111"]).await;
    let desk = api.phone(a, "alice-desk").await;
    let t = api.user_token(a).await;
    let lid = api
        .post(
            "/api/v1/me/locations",
            &t,
            json!({"name": "Office", "phones": [desk]}),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    api.put("/api/v1/me/location", &t, json!({"location_id": lid}))
        .await;
    api.store.close().await;

    // A new store on the same database sees everything that was acknowledged.
    let store = api._db.store().await;
    let user = store.get_user(a).await.unwrap().unwrap();
    assert_eq!(user.external_numbers[0].number, "+491701111");
    assert!(store
        .phone_credentials("alice-desk")
        .await
        .unwrap()
        .is_some());
    let cur = store.current_location(a).await.unwrap().unwrap();
    assert_eq!(cur.id, lid);
    assert_eq!(cur.phones, vec![desk]);
    assert!(store.verify_token(&t).await.unwrap().is_some());
    assert!(store.verify_token(&api.admin).await.unwrap().is_some());
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let api = Api::new(Db::Sqlite).await;
    let r = api
        .raw(Method::GET, "/api/v1/openapi.json", None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().unwrap();
    let expected: &[(&str, &[&str])] = &[
        ("/api/v1/users", &["get", "post"]),
        ("/api/v1/users/{id}", &["get", "patch", "delete"]),
        ("/api/v1/users/{id}/phones", &["get", "post"]),
        ("/api/v1/phones/{id}", &["get", "patch", "delete"]),
        ("/api/v1/users/{id}/tokens", &["post"]),
        ("/api/v1/me", &["get"]),
        ("/api/v1/me/phones", &["get"]),
        ("/api/v1/me/locations", &["get", "post"]),
        (
            "/api/v1/me/locations/{location_id}",
            &["get", "patch", "delete"],
        ),
        ("/api/v1/me/location", &["get", "put"]),
        ("/api/v1/users/{id}/locations", &["get", "post"]),
        (
            "/api/v1/users/{id}/locations/{location_id}",
            &["get", "patch", "delete"],
        ),
        ("/api/v1/users/{id}/location", &["get", "put"]),
        ("/api/v1/bans", &["get"]),
        ("/api/v1/dialplan", &["get"]),
        ("/api/v1/dialplan/reload", &["post"]),
        ("/api/v1/bans/{ip}", &["delete"]),
        ("/api/v1/trunks", &["get"]),
        ("/api/v1/me/history", &["get"]),
        ("/api/v1/users/{id}/history", &["get"]),
        ("/api/v1/me/calls", &["post"]),
        ("/api/v1/me/calls/{call_id}", &["get", "delete"]),
        ("/api/v1/users/{id}/calls", &["post"]),
        ("/api/v1/users/{id}/calls/{call_id}", &["get", "delete"]),
        ("/api/v1/me/events", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    assert_eq!(paths.len(), expected.len(), "undocumented extra paths?");
    let schemas = r.body["components"]["schemas"].as_object().unwrap();
    for s in [
        "User",
        "Phone",
        "Location",
        "NewUser",
        "Problem",
        "CurrentLocation",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let api = Api::new(Db::Sqlite).await;
    let r = api.raw(Method::GET, "/healthz", None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");

    api.user("100", &[]).await;
    let r = api.raw(Method::GET, "/metrics", None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/plain"));
    assert!(r.text.contains("switchboard_users 1"), "{}", r.text);
    assert!(
        r.text
            .contains("switchboard_http_responses_total{class=\"2xx\"}"),
        "{}",
        r.text
    );

    api.get("/api/v1/nothing-here", &api.admin)
        .await
        .problem(404, None);
}

/// Call history through the API: a few hundred generated calls between three users and the
/// outside; every filter, every sort in both orders paged through with cursors, names resolved
/// as recorded, and nobody sees anyone else's calls.
async fn call_history(db: Db) {
    use switchboard::store::{CallDirection, CallOutcome, CallParty, NewCallRecord, PartyOutcome};
    let api = Api::new(db).await;
    let a = api.user("301", &[]).await;
    let b = api.user("302", &[]).await;
    let c = api.user("303", &[]).await;
    let (ta, tb) = (api.user_token(a).await, api.user_token(b).await);
    let outcomes = [
        CallOutcome::Answered,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::Failed,
        CallOutcome::Cancelled,
    ];
    // (user, direction, other number, outcome) for each party written: the reference.
    let mut expected: Vec<(i64, CallDirection, String, PartyOutcome)> = Vec::new();
    let mut records = Vec::new();
    for i in 0..300i64 {
        let outcome = outcomes[(i % 5) as usize];
        let started = 1_700_000_000_000 + i * 7_919 % 100_000 * 1_000;
        let answered = (outcome == CallOutcome::Answered).then_some(started + 2_000);
        let ended = started + 2_000 + (i * 37 % 600) * 1_000;
        // Calls between users, and users with numbers outside (through a trunk).
        type Side<'a> = Option<(i64, &'a str)>;
        let (from, to): (Side, Side) = match i % 4 {
            0 => (Some((a, "301")), Some((b, "302"))),
            1 => (Some((b, "302")), Some((a, "301"))),
            2 => (Some((a, "301")), None),
            _ => (Some((c, "303")), Some((b, "302"))),
        };
        let outside = format!("+4930{:06}", i * 13 % 1000);
        let mut parties = Vec::new();
        if let Some((uid, _)) = from {
            let other = to.map_or(outside.clone(), |t| t.1.to_owned());
            parties.push(CallParty {
                user_id: uid,
                direction: CallDirection::Outgoing,
                other_number: other.clone(),
                other_name: format!("name {}", i % 17),
                answered_by: None,
            });
            expected.push((
                uid,
                CallDirection::Outgoing,
                other,
                PartyOutcome::of(outcome, CallDirection::Outgoing),
            ));
        }
        if let Some((uid, _)) = to {
            let other = from.map(|f| f.1.to_owned()).unwrap_or_default();
            parties.push(CallParty {
                user_id: uid,
                direction: CallDirection::Incoming,
                other_number: other.clone(),
                other_name: String::new(),
                answered_by: answered.map(|_| format!("phone:{}", 40 + i % 3)),
            });
            expected.push((
                uid,
                CallDirection::Incoming,
                other,
                PartyOutcome::of(outcome, CallDirection::Incoming),
            ));
        }
        records.push(NewCallRecord {
            call_ref: format!("history-{i}"),
            started_at: started,
            answered_at: answered,
            ended_at: ended,
            outcome,
            hangup_cause: "caller".into(),
            caller_number: from.map(|f| f.1.to_owned()).unwrap_or_default(),
            caller_name: String::new(),
            dialled_number: to.map_or(outside.clone(), |t| t.1.to_owned()),
            callee_number: to.map_or(outside.clone(), |t| t.1.to_owned()),
            callee_name: String::new(),
            click_to_call: i % 10 == 0,
            trunk: to.is_none().then(|| "default".to_owned()),
            parties,
        });
    }
    api.store.insert_calls(&records).await.unwrap();

    let count = |user: i64, dir: Option<CallDirection>, out: Option<&str>| {
        expected
            .iter()
            .filter(|e| e.0 == user && dir.map_or(true, |d| d == e.1))
            .filter(|e| match out {
                Some("answered") => e.3 == PartyOutcome::Answered,
                Some("missed") => e.3 == PartyOutcome::Missed,
                _ => true,
            })
            .count()
    };
    let all_pages = |token: String, query: String| {
        let api = &api;
        async move {
            let mut items: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/api/v1/me/history?limit=37{query}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let r = api.get(&path, &token).await;
                assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
                items.extend(r.body["items"].as_array().unwrap().iter().cloned());
                match r.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return items,
                }
            }
        }
    };

    // Every filter: the counts of the reference, and only matching entries.
    for dir in [
        None,
        Some(CallDirection::Incoming),
        Some(CallDirection::Outgoing),
    ] {
        for out in [None, Some("answered"), Some("missed")] {
            let mut q = String::new();
            if let Some(d) = dir {
                q.push_str(&format!("&direction={}", d.as_str()));
            }
            if let Some(o) = out {
                q.push_str(&format!("&outcome={o}"));
            }
            for (user, token) in [(a, &ta), (b, &tb)] {
                let items = all_pages(token.clone(), q.clone()).await;
                assert_eq!(items.len(), count(user, dir, out), "user {user} {q}");
                for it in &items {
                    if let Some(d) = dir {
                        assert_eq!(it["direction"], d.as_str());
                    }
                    if let Some(o) = out {
                        assert_eq!(it["outcome"], o);
                    }
                }
            }
        }
    }
    // Every sort, both orders: pages in order, nothing lost or repeated.
    let key = |it: &Value, sort: &str| -> (String, i64) {
        let t = it["started_at"].as_i64().unwrap();
        match sort {
            "number" => (it["other_number"].as_str().unwrap().to_owned(), t),
            "name" => (it["other_name"].as_str().unwrap().to_lowercase(), t),
            "duration" => (format!("{:012}", it["duration_ms"].as_i64().unwrap()), t),
            "outcome" => (it["outcome"].as_str().unwrap().to_owned(), t),
            _ => (String::new(), t),
        }
    };
    for sort in ["time", "number", "name", "duration", "outcome"] {
        for order in ["asc", "desc"] {
            let items = all_pages(ta.clone(), format!("&sort={sort}&order={order}")).await;
            assert_eq!(items.len(), count(a, None, None), "{sort} {order}");
            let ids: std::collections::HashSet<i64> =
                items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
            assert_eq!(ids.len(), items.len(), "{sort} {order}: an entry twice");
            for w in items.windows(2) {
                let (k0, k1) = (key(&w[0], sort), key(&w[1], sort));
                if order == "asc" {
                    assert!(k0 <= k1, "{sort} asc: {k0:?} > {k1:?}");
                } else {
                    assert!(k0 >= k1, "{sort} desc: {k0:?} < {k1:?}");
                }
            }
        }
    }
    // The default: newest first; names as recorded; which phone answered; click-to-call.
    let r = api.get("/api/v1/me/history?limit=500", &ta).await;
    let items = r.body["items"].as_array().unwrap();
    assert!(items
        .windows(2)
        .all(|w| w[0]["started_at"].as_i64() >= w[1]["started_at"].as_i64()));
    assert!(items
        .iter()
        .filter(|i| i["direction"] == "outgoing")
        .all(|i| i["other_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("name "))));
    assert!(items
        .iter()
        .filter(|i| i["direction"] == "incoming" && i["outcome"] == "answered")
        .all(|i| i["answered_by_phone"]
            .as_i64()
            .is_some_and(|p| (40..43).contains(&p))));
    assert!(items.iter().any(|i| i["click_to_call"] == true));
    assert!(items.iter().any(|i| i["other_number"]
        .as_str()
        .is_some_and(|n| n.starts_with("+4930"))));
    // The admin mirror gives the same; a user token may not use it; unknown users are 404.
    let mirror = api
        .get(&format!("/api/v1/users/{a}/history?limit=500"), &api.admin)
        .await;
    assert_eq!(mirror.body["items"], r.body["items"]);
    api.get(&format!("/api/v1/users/{b}/history"), &ta)
        .await
        .problem(403, None);
    api.get("/api/v1/users/999999/history", &api.admin)
        .await
        .problem(404, None);
    api.get("/api/v1/me/history", &api.admin)
        .await
        .problem(403, None);
    // C's calls are C's and B's only.
    assert!(items.iter().all(|i| i["other_number"] != "303"));
    // Bad parameters name the field.
    api.get("/api/v1/me/history?sort=colour", &ta)
        .await
        .problem(422, Some("sort"));
    api.get("/api/v1/me/history?direction=sideways", &ta)
        .await
        .problem(422, Some("direction"));
    api.get("/api/v1/me/history?outcome=maybe", &ta)
        .await
        .problem(422, Some("outcome"));
    api.get("/api/v1/me/history?order=up", &ta)
        .await
        .problem(422, Some("order"));
    api.get("/api/v1/me/history?limit=0", &ta)
        .await
        .problem(400, Some("limit"));
    let bad = api.get("/api/v1/me/history?cursor=garbage", &ta).await;
    assert!(bad.status.is_client_error(), "{}", bad.text);
    assert_eq!(bad.body["field"], "cursor", "{}", bad.text);
}

/// Click-to-call's API edges (the calls themselves are in tests/click_to_call.rs, against SIPp
/// phones): who may start one for whom, and the refusals that need no phone.
async fn click_to_call_routes(db: Db) {
    let api = Api::new(db).await;
    let a = api.user("301", &[]).await;
    let b = api.user("302", &[]).await;
    let ta = api.user_token(a).await;
    // No phone of A's location is registered: 409, for A and for a service token acting for A.
    api.post("/api/v1/me/calls", &ta, json!({"to": "302"}))
        .await
        .problem(409, None);
    api.post(
        &format!("/api/v1/users/{a}/calls"),
        &api.admin,
        json!({"to": "302"}),
    )
    .await
    .problem(409, None);
    // Numbers that go nowhere, and bodies that say too much or too little: 422 on the field.
    for (body, field) in [
        (json!({"to": "x1"}), "to"),
        (json!({"to": ""}), "to"),
        (json!({"to": "399"}), "to"),
        (json!({}), "to"),
        (json!({"to": "302", "history_id": 3}), "to"),
        (json!({"history_id": 3}), "history_id"),
    ] {
        api.post("/api/v1/me/calls", &ta, body)
            .await
            .problem(422, Some(field));
    }
    api.post("/api/v1/me/calls", &ta, json!({"to": 302}))
        .await
        .problem(400, None);
    // A user token cannot act for someone else; unknown ids are 404 for everyone.
    api.post(
        &format!("/api/v1/users/{b}/calls"),
        &ta,
        json!({"to": "301"}),
    )
    .await
    .problem(403, None);
    api.post(
        "/api/v1/users/999999/calls",
        &api.admin,
        json!({"to": "301"}),
    )
    .await
    .problem(404, None);
    api.get("/api/v1/me/calls/0123456789abcdef", &ta)
        .await
        .problem(404, None);
    api.delete("/api/v1/me/calls/0123456789abcdef", &ta)
        .await
        .problem(404, None);
    api.get(
        &format!("/api/v1/users/{a}/calls/0123456789abcdef"),
        &api.admin,
    )
    .await
    .problem(404, None);
    api.get("/api/v1/events", &ta).await.problem(403, None);
    api.get("/api/v1/me/events", &api.admin)
        .await
        .problem(403, None);
}
