//! People's routes: log in and out, who am I, and for admins the users,
//! API tokens and the audit.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::access::{Access, Principal, SESSION_COOKIE, Via, cookie};
use crate::directory::{Directory, DirectoryError};
use crate::password;
use crate::role::Role;

/// Failed logins of one user name before they must wait.
const MAX_FAILURES: u32 = 5;
/// How long a user name stays locked after too many failed logins.
const LOCKOUT_MS: i64 = 5 * 60 * 1000;

/// The routes (their needs are the server's classification).
pub fn routes(access: Access) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/api/v1/users", get(users).post(add_user))
        .route("/api/v1/users/{name}", delete(remove_user).put(update_user))
        .route("/api/v1/tokens", get(tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit))
        .map(|r| r.with_state(access))
}

#[derive(Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

fn session_cookie(id: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached us over HTTPS (our own TLS, or a trusted
/// proxy says so).
fn https(access: &Access, headers: &HeaderMap) -> bool {
    access
        .inner()
        .tls
        .load(std::sync::atomic::Ordering::Relaxed)
        || access.inner().proxy_trusted
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `POST /api/v1/login` `{user, password}` (JSON or a form): a session
/// cookie and the CSRF token its changes must echo. Attempts are counted
/// per address and name before the password is checked: the sixth within
/// 5 minutes waits (429); at most one check per core runs at once (503).
async fn login(State(access): State<Access>, req: axum::extract::Request) -> Response {
    let a = access.inner();
    if !a.login {
        return keel_http::bad("no login is required here (collector.auth.login is false)".into());
    }
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let Ok(body) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return keel_http::bad("the login body is larger than 64 KiB".into());
    };
    let Some(creds) = credentials(&headers, &body) else {
        return keel_http::bad("expected {\"user\", \"password\"} as JSON or a form".into());
    };
    let wrong = || {
        keel_http::fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong user name or password".into(),
        )
    };
    // A name no user can have is wrong without costing a hash.
    if crate::directory::check_name("user", &creds.user).is_err() {
        return wrong();
    }
    let now = a.clock.now_ms();
    let key = format!("{peer}|{}", creds.user);
    if let Err(wait) = attempt(&access, &key, now) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            Json(json!({"status": "error", "errorType": "too_many_requests",
                "error": format!("too many failed logins for {:?}: try again in {wait} s", creds.user)})),
        )
            .into_response();
    }
    let Ok(_permit) = a.verifying.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({"status": "error", "errorType": "unavailable",
                "error": "too many logins at once: try again"})),
        )
            .into_response();
    };
    let user = match &a.directory {
        Some(d) => match d.user(&creds.user).await {
            Ok(u) => u,
            Err(e) => {
                return keel_http::fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                );
            }
        },
        None => None,
    };
    let hash = user
        .as_ref()
        .map_or_else(|| password::decoy().to_owned(), |u| u.hash.clone());
    let pw = creds.password.clone();
    let right = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| right) else {
        tracing::warn!(user = %creds.user, %peer, "failed login");
        return wrong();
    };
    a.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    let (id, s) = access.begin(&user);
    tracing::info!(user = %user.name, %peer, "login");
    (
        [(
            header::SET_COOKIE,
            session_cookie(&id, a.session_ttl_s, https(&access, &headers)),
        )],
        Json(json!({"status": "success", "data": {
            "user": user.name, "role": user.role, "csrf": s.csrf, "expires_ms": s.expires_ms}})),
    )
        .into_response()
}

/// The user and password of a login, from JSON or a form.
fn credentials(headers: &HeaderMap, body: &Bytes) -> Option<Credentials> {
    if let Ok(c) = serde_json::from_slice::<Credentials>(body) {
        return Some(c);
    }
    let p = keel_http::params(None, headers, body);
    Some(Credentials {
        user: keel_http::param(&p, "user")?.to_owned(),
        password: keel_http::param(&p, "password")?.to_owned(),
    })
}

/// Count a login attempt from `key` (address and name), or the seconds
/// it must wait: one lock for the check and the count, so parallel
/// guesses cannot all slip past the limit. A success forgets the count.
fn attempt(access: &Access, key: &str, now: i64) -> Result<(), i64> {
    let mut f = access
        .inner()
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if f.len() > 10_000 {
        f.retain(|_, (first, _)| now - *first < LOCKOUT_MS);
    }
    let e = f.entry(key.to_owned()).or_insert((now, 0));
    if now - e.0 >= LOCKOUT_MS {
        *e = (now, 0);
    }
    if e.1 >= MAX_FAILURES {
        return Err(((LOCKOUT_MS - (now - e.0)) / 1000).max(1));
    }
    e.1 += 1;
    Ok(())
}

/// `POST /api/v1/logout`: the session ends and its cookie is cleared.
async fn logout(State(access): State<Access>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        access.inner().sessions.end(id);
    }
    (
        [(
            header::SET_COOKIE,
            session_cookie("", 0, https(&access, &headers)),
        )],
        Json(json!({"status": "success", "data": {}})),
    )
        .into_response()
}

/// `GET /api/v1/session`: whether login is required, and who this is.
async fn session(State(access): State<Access>, who: Option<Extension<Principal>>) -> Response {
    let who = who.map(|Extension(p)| p);
    let csrf = match who.as_ref().map(|p| &p.via) {
        Some(Via::Session(c)) => Some(c.clone()),
        _ => None,
    };
    keel_http::ok(json!({
        "login": access.login_required(),
        "user": who.as_ref().map(|p| p.name.clone()),
        "role": who.as_ref().map(|p| p.role),
        "csrf": csrf,
    }))
}

fn directory(access: &Access) -> Option<&Directory> {
    access.inner().directory.as_ref()
}

fn no_store() -> Response {
    keel_http::fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "users and tokens need a state store (collector.state is none)".into(),
    )
}

fn refused(e: DirectoryError) -> Response {
    match e {
        DirectoryError::Refused(m) => keel_http::bad(m),
        e => keel_http::fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

/// `GET /api/v1/users`: names, roles, when added and changed.
async fn users(State(access): State<Access>) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    match d.users().await {
        Ok(us) => keel_http::ok(json!(us.iter().map(|u| json!({
            "name": u.name, "role": u.role, "created_ms": u.created_ms, "updated_ms": u.updated_ms
        })).collect::<Vec<_>>())),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: Role,
    password: String,
}

/// `POST /api/v1/users` `{name, role, password}`.
async fn add_user(State(access): State<Access>, body: Bytes) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    let u: NewUser = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return keel_http::bad(format!(
                "expected {{\"name\", \"role\", \"password\"}}: {e}"
            ));
        }
    };
    match d
        .add_user(&u.name, u.role, &u.password, access.inner().clock.now_ms())
        .await
    {
        Ok(u) => keel_http::ok(json!({"name": u.name, "role": u.role})),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
struct UserChange {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}

/// `PUT /api/v1/users/{name}` `{password?, role?}`: their sessions end.
async fn update_user(
    State(access): State<Access>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    let c: UserChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return keel_http::bad(format!("expected {{\"password\"?, \"role\"?}}: {e}")),
    };
    let r = d
        .update_user(
            &name,
            c.password.as_deref(),
            c.role,
            access.inner().clock.now_ms(),
        )
        .await;
    access.forget(&format!("u:{name}"));
    match r {
        Ok(u) => keel_http::ok(json!({"name": u.name, "role": u.role})),
        Err(e) => refused(e),
    }
}

/// `DELETE /api/v1/users/{name}`: their sessions end.
async fn remove_user(State(access): State<Access>, Path(name): Path<String>) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    let r = d.remove_user(&name).await;
    access.forget(&format!("u:{name}"));
    match r {
        Ok(true) => keel_http::ok(json!({"removed": name})),
        Ok(false) => keel_http::fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user {name:?}"),
        ),
        Err(e) => refused(e),
    }
}

/// `GET /api/v1/tokens`: every token's record (never the token).
async fn tokens(State(access): State<Access>) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    match d.tokens().await {
        Ok(ts) => keel_http::ok(json!(
            ts.iter()
                .map(|t| json!({
                    "id": t.id, "name": t.name, "role": t.role, "created_ms": t.created_ms,
                    "expires_ms": t.expires_ms, "created_by": t.created_by
                }))
                .collect::<Vec<_>>()
        )),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: Role,
    /// How long it lasts (`30d`); none: until revoked.
    #[serde(default)]
    expires: Option<String>,
}

/// `POST /api/v1/tokens` `{name, role, expires?}`: the token, shown once.
async fn create_token(
    State(access): State<Access>,
    who: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    let t: NewToken = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return keel_http::bad(format!(
                "expected {{\"name\", \"role\", \"expires\"?}}: {e}"
            ));
        }
    };
    let now = access.inner().clock.now_ms();
    let expires_ms = match t
        .expires
        .as_deref()
        .map(|e| crate::directory::expiry(now, e))
    {
        None => None,
        Some(Ok(e)) => e,
        Some(Err(e)) => return keel_http::bad(format!("expires: {e}")),
    };
    let by = who.map_or_else(|| "anonymous".into(), |Extension(p)| p.name);
    match d.create_token(&t.name, t.role, expires_ms, &by, now).await {
        Ok((token, rec)) => keel_http::ok(json!({
            "token": token, "id": rec.id, "name": rec.name, "role": rec.role, "expires_ms": rec.expires_ms
        })),
        Err(e) => refused(e),
    }
}

/// `DELETE /api/v1/tokens/{id}` (an id or a name).
async fn revoke_token(State(access): State<Access>, Path(which): Path<String>) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    match d.revoke_token(&which).await {
        Ok(gone) if gone.is_empty() => keel_http::fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token {which:?}"),
        ),
        Ok(gone) => {
            for t in &gone {
                access.forget(&format!("t:{}", t.id));
            }
            keel_http::ok(json!({"revoked": gone.iter().map(|t| &t.id).collect::<Vec<_>>()}))
        }
        Err(e) => refused(e),
    }
}

/// `GET /api/v1/audit?start=&end=&limit=`: changes people made.
async fn audit(State(access): State<Access>, RawQuery(q): RawQuery) -> Response {
    let Some(d) = directory(&access) else {
        return no_store();
    };
    let p = keel_http::params(q, &HeaderMap::new(), &Bytes::new());
    let now = access.inner().clock.now_ms();
    let time = |name: &str, default: i64| match keel_http::param(&p, name) {
        None => Ok(default),
        Some(v) => keel_http::parse_time(v).map_err(|e| format!("{name}: {e}")),
    };
    let (start, end) = match (time("start", now - 7 * 24 * 3_600_000), time("end", now)) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return keel_http::bad(e),
    };
    let limit = match keel_http::param(&p, "limit")
        .map(str::parse::<i64>)
        .transpose()
    {
        Ok(l) => l.unwrap_or(1000).clamp(1, 10_000),
        Err(e) => return keel_http::bad(format!("limit: {e}")),
    };
    match d.audit_between(start, end, limit).await {
        Ok(es) => keel_http::ok(json!(es)),
        Err(e) => refused(e),
    }
}
