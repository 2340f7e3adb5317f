//! The guard in front of every route people use (the API and the pages).
//!
//! In order, for each request:
//! 1. **Host**: the `Host` header must be an IP address, `localhost`,
//!    this machine's hostname or one of `collector.auth.hosts` — a page
//!    served from another name that resolves here (DNS rebinding) is
//!    refused, login or not.
//! 2. **Origin**: a state-changing request (anything but GET, HEAD,
//!    OPTIONS) that a browser marks as coming from another site (`Origin`
//!    not this host, or `Sec-Fetch-Site: cross-site`/`same-site`) is
//!    refused, so a page elsewhere cannot POST here.
//! 3. **Who**: with `collector.auth.login`, an API token (`Authorization:
//!    Bearer keel_…`), a session cookie, or a trusted proxy's header;
//!    without it, everyone is `anonymous` with every right.
//! 4. **Role**: the route's need (the server's classification of method
//!    and route) against the role; a browser session's change must also
//!    echo its CSRF token in `X-Keel-CSRF`.
//! 5. **Audit**: a change that succeeded is recorded with who and when.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::clock::SharedClock;

use crate::config::AuthConfig;
use crate::directory::{AuditEntry, Directory, TokenRecord, User, token_digest, token_id};
use crate::role::Role;
use crate::sessions::{Session, Sessions};

/// Where the guard puts an HTTP/2 request's `:authority` (its host) for
/// the Host and Origin checks, since no `Host` header comes with it.
const AUTHORITY: &str = "x-keel-authority";

/// The cookie holding a browser's session id.
pub const SESSION_COOKIE: &str = "keel_session";

/// The header a browser session's change echoes its CSRF token in.
pub const CSRF_HEADER: &str = "x-keel-csrf";

/// How long a user or token read from the store is believed.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the login page, its files, login and logout.
    Open,
    /// At least `role`; `change`: the request changes something (it is
    /// audited).
    Role {
        /// The least role.
        role: Role,
        /// Whether it changes state.
        change: bool,
    },
}

/// The server's table of what each (method, route pattern) needs.
pub type Classify = fn(&Method, &str) -> Need;

/// How a person was recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// No login is required: everyone is anonymous.
    Anonymous,
    /// A browser session (its CSRF token).
    Session(String),
    /// An API token (its id).
    Token(String),
    /// A trusted proxy's header.
    Proxy,
}

/// Who a request is from (in the request's extensions for handlers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A user's name, `token:<name>`, or `anonymous`.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// How they were recognised.
    pub via: Via,
}

struct Proxy {
    trusted: Vec<ipnet::IpNet>,
    user_header: HeaderName,
    role_header: Option<HeaderName>,
    role: Role,
}

enum Cached {
    User(Option<User>),
    Token(Option<TokenRecord>),
}

/// The guard's state: settings, sessions, the directory and its cache
/// (shared by every listener it guards), and one listener's route table.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
    classify: Classify,
}

pub(crate) struct Inner {
    pub(crate) login: bool,
    hosts: Vec<String>,
    pub(crate) proxy_trusted: bool,
    proxy: Option<Proxy>,
    pub(crate) sessions: Sessions,
    pub(crate) directory: Option<Directory>,
    cache: Mutex<HashMap<String, (Instant, Cached)>>,
    pub(crate) failures: Mutex<HashMap<String, (i64, u32)>>,
    /// Whether the listeners serve TLS (session cookies are then `Secure`).
    pub(crate) tls: std::sync::atomic::AtomicBool,
    /// Password checks at once (argon2 takes 19 MiB and tens of ms each).
    pub(crate) verifying: Arc<tokio::sync::Semaphore>,
    pub(crate) clock: SharedClock,
    pub(crate) session_ttl_s: u64,
}

/// Why a request is refused: its status and message.
pub(crate) struct Refused(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let kind = match self.0 {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            _ => "forbidden",
        };
        let mut r = keel_http::fail(self.0, kind, self.1);
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"keel\""),
            );
        }
        r
    }
}

impl Access {
    /// The guard for `config`, reading people from `directory` (required
    /// when `config.login`), classifying routes with `classify`.
    pub fn new(
        config: &AuthConfig,
        directory: Option<Directory>,
        clock: SharedClock,
        classify: Classify,
    ) -> Result<Self, String> {
        if config.login && directory.is_none() {
            return Err("collector.auth.login needs a state store to keep users in (collector.state is none)".into());
        }
        let p = &config.proxy;
        let trusted = p.networks()?;
        let proxy = if trusted.is_empty() {
            None
        } else {
            let name =
                |h: &str| HeaderName::from_bytes(h.as_bytes()).map_err(|e| format!("{h:?}: {e}"));
            Some(Proxy {
                trusted,
                user_header: name(&p.user_header)?,
                role_header: (!p.role_header.is_empty())
                    .then(|| name(&p.role_header))
                    .transpose()?,
                role: p.role,
            })
        };
        let mut hosts: Vec<String> = config
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if let Ok(h) = nix::unistd::gethostname()
            && let Some(h) = h.to_str()
        {
            hosts.push(h.to_ascii_lowercase());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                login: config.login,
                hosts,
                proxy_trusted: proxy.is_some(),
                proxy,
                sessions: Sessions::new(config.session_ttl.as_millis() as i64),
                directory,
                cache: Mutex::default(),
                failures: Mutex::default(),
                tls: std::sync::atomic::AtomicBool::new(false),
                verifying: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )),
                clock,
                session_ttl_s: config.session_ttl.as_secs(),
            }),
            classify,
        })
    }

    /// The same people, sessions and audit for another listener, whose
    /// routes `classify` describes (the controller's API).
    pub fn with_routes(&self, classify: Classify) -> Self {
        Self {
            inner: self.inner.clone(),
            classify,
        }
    }

    /// The listeners serve TLS: session cookies are marked `Secure`.
    pub fn serving_tls(&self) {
        self.inner
            .tls
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether people must log in.
    pub fn login_required(&self) -> bool {
        self.inner.login
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Whether `peer` is a trusted proxy.
    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match (&self.inner.proxy, peer) {
            (Some(p), Some(ip)) => p.trusted.iter().any(|n| n.contains(&ip)),
            _ => false,
        }
    }

    /// Step 1: a browser's request names this Keel in its Host header.
    /// Only what a browser sends is checked (DNS rebinding is a browser's
    /// attack): Grafana's backend, Prometheus scraping `/metrics` and the
    /// CLI may reach Keel by any name.
    fn check_host(&self, headers: &HeaderMap, from_proxy: bool) -> Result<(), Refused> {
        let browser = ["sec-fetch-site", "sec-fetch-mode", "origin", "cookie"]
            .iter()
            .any(|h| headers.contains_key(*h));
        if !browser {
            return Ok(());
        }
        let Some(host) = request_host(headers, from_proxy) else {
            return Ok(());
        };
        let name = host_name(&host);
        let ok = name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.inner.hosts.contains(&name);
        if ok {
            Ok(())
        } else {
            Err(Refused(
                StatusCode::FORBIDDEN,
                format!(
                    "this Keel does not answer to the name {name:?}: add it to collector.auth.hosts"
                ),
            ))
        }
    }

    /// A user, read through the cache.
    async fn user(&self, name: &str) -> Option<User> {
        let key = format!("u:{name}");
        if let Some(Cached::User(u)) = self.cached(&key) {
            return u;
        }
        let dir = self.inner.directory.as_ref()?;
        let u = match dir.user(name).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "reading a user failed");
                return None;
            }
        };
        self.cache(key, Cached::User(u.clone()));
        u
    }

    /// A token's record, read through the cache.
    async fn token(&self, id: &str) -> Option<TokenRecord> {
        let key = format!("t:{id}");
        if let Some(Cached::Token(t)) = self.cached(&key) {
            return t;
        }
        let dir = self.inner.directory.as_ref()?;
        let t = match dir.token(id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "reading a token failed");
                return None;
            }
        };
        // Only tokens that exist are cached: made-up ids cannot fill it.
        if t.is_some() {
            self.cache(key, Cached::Token(t.clone()));
        }
        t
    }

    fn cached(&self, key: &str) -> Option<Cached> {
        let c = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        match c.get(key) {
            Some((at, v)) if at.elapsed() < CACHE_TTL => Some(match v {
                Cached::User(u) => Cached::User(u.clone()),
                Cached::Token(t) => Cached::Token(t.clone()),
            }),
            _ => None,
        }
    }

    fn cache(&self, key: String, v: Cached) {
        let mut c = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 10_000 {
            c.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        c.insert(key, (Instant::now(), v));
    }

    /// Forget what is cached of `user` (after a change through the API).
    pub(crate) fn forget(&self, key: &str) {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Step 3: who the request is from (`None`: no one logged in).
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        from_proxy: bool,
    ) -> Result<Option<Principal>, Refused> {
        if !self.inner.login {
            return Ok(Some(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
                via: Via::Anonymous,
            }));
        }
        let now = self.inner.clock.now_ms();
        // A trusted proxy may pass its own bearer on (oauth2-proxy): only
        // a Keel token is read as one there.
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let bearer = keel_core::secret::bearer(given);
        let keel_bearer = bearer.is_ok_and(|t| token_id(t).is_some());
        if given.is_some() && (!from_proxy || keel_bearer) {
            let unauthorized = |m: &str| Refused(StatusCode::UNAUTHORIZED, m.to_owned());
            let token = bearer
                .map_err(|_| unauthorized("the Authorization header is not Bearer <token>"))?;
            let id = token_id(token).ok_or_else(|| {
                unauthorized("not a Keel API token (keel_…): make one with keel token create")
            })?;
            let rec = self
                .token(id)
                .await
                .filter(|r| constant_eq(&r.sha256, &token_digest(token)))
                .ok_or_else(|| {
                    unauthorized("the API token is not valid (revoked or never made)")
                })?;
            if let Some(exp) = rec.expires_ms
                && exp <= now
            {
                let at = if exp >= 0 {
                    humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(exp))
                        .to_string()
                } else {
                    format!("{exp} ms")
                };
                return Err(unauthorized(&format!(
                    "the API token {:?} expired at {at}",
                    rec.name
                )));
            }
            return Ok(Some(Principal {
                name: format!("token:{}", rec.name),
                role: rec.role,
                via: Via::Token(rec.id),
            }));
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE)
            && let Some(s) = self.inner.sessions.get(id, now)
        {
            match self.user(&s.user).await {
                // A password or role changed since login ends the session.
                Some(u) if u.updated_ms == s.user_updated_ms => {
                    return Ok(Some(Principal {
                        name: u.name,
                        role: u.role,
                        via: Via::Session(s.csrf),
                    }));
                }
                _ => self.inner.sessions.end(id),
            }
        }
        if from_proxy
            && let Some(p) = &self.inner.proxy
            && let Some(user) = headers.get(&p.user_header).and_then(|v| v.to_str().ok())
            && !user.trim().is_empty()
        {
            let role = match p.role_header.as_ref().and_then(|h| headers.get(h)) {
                None => p.role,
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Refused(
                            StatusCode::UNAUTHORIZED,
                            format!(
                                "the proxy's {} header is not a role (viewer, editor, admin)",
                                p.role_header.as_ref().map_or("", |h| h.as_str())
                            ),
                        )
                    })?,
            };
            return Ok(Some(Principal {
                name: user.trim().to_owned(),
                role,
                via: Via::Proxy,
            }));
        }
        Ok(None)
    }

    /// Begin a browser session for `user`.
    pub(crate) fn begin(&self, user: &User) -> (String, Session) {
        self.inner.sessions.begin(user, self.inner.clock.now_ms())
    }

    /// Record a change; an audit that cannot be written is logged.
    pub(crate) async fn audit(&self, who: &Principal, what: String, status: u16) {
        let entry = AuditEntry {
            at_ms: self.inner.clock.now_ms(),
            who: who.name.clone(),
            role: who.role,
            what,
            status,
        };
        tracing::info!(who = %entry.who, what = %entry.what, status, "change");
        if let Some(d) = &self.inner.directory
            && let Err(e) = d.audit(&entry).await
        {
            tracing::error!(error = %e, "the audit entry was not saved");
        }
    }
}

/// The authority the request was sent to: a trusted proxy's
/// `X-Forwarded-Host`, else `Host`.
fn request_host(headers: &HeaderMap, from_proxy: bool) -> Option<String> {
    let forwarded = from_proxy
        .then(|| headers.get("x-forwarded-host"))
        .flatten();
    forwarded
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        // HTTP/2 carries the host in the request's `:authority`, which
        // the guard copies here (no `Host` header comes with it).
        .or_else(|| {
            headers
                .get(AUTHORITY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
}

/// A host without its port (`[::1]:7070` → `::1`).
fn host_name(authority: &str) -> String {
    if authority.parse::<IpAddr>().is_ok() {
        return authority.to_owned();
    }
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    let name = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    // `localhost.` is `localhost`, fully qualified.
    name.trim_end_matches('.').to_owned()
}

/// Step 2: a browser's cross-site change is refused.
fn check_origin(headers: &HeaderMap, from_proxy: bool) -> Result<(), Refused> {
    let refused = |why: String| {
        Err(Refused(
            StatusCode::FORBIDDEN,
            format!("cross-site request refused: {why}"),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && (site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site"))
    {
        return refused(format!("the browser says it came from a {site} page"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .unwrap_or("null")
        .trim()
        .to_ascii_lowercase();
    let authority = origin
        .split_once("://")
        .map(|(scheme, rest)| strip_default_port(scheme, rest));
    let host = request_host(headers, from_proxy).map(|h| {
        let scheme = if h.ends_with(":443") { "https" } else { "http" };
        strip_default_port(scheme, &h)
    });
    match (authority, host) {
        (Some(a), Some(h)) if a == h => Ok(()),
        _ => refused(format!("Origin {origin} is not this Keel")),
    }
}

fn strip_default_port(scheme: &str, authority: &str) -> String {
    let a = authority.trim_end_matches('/');
    match (scheme, a.rsplit_once(':')) {
        ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_owned(),
        _ => a.to_owned(),
    }
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn constant_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether a request of `method` changes nothing (by HTTP's rules).
fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware (a `route_layer`, so the route's pattern is known).
pub async fn guard(State(access): State<Access>, mut req: Request, next: Next) -> Response {
    match admit(&access, &mut req).await {
        Err(r) => r.into_response(),
        Ok((need, who)) => {
            let what = format!("{} {}", req.method(), req.uri().path());
            if let Some(p) = &who {
                req.extensions_mut().insert(p.clone());
            }
            let resp = next.run(req).await;
            if let (Need::Role { change: true, .. }, Some(p)) = (need, &who)
                && resp.status().is_success()
            {
                access.audit(p, what, resp.status().as_u16()).await;
            }
            resp
        }
    }
}

/// Steps 1 to 4: what the route needs and who asks, or the refusal.
async fn admit(access: &Access, req: &mut Request) -> Result<(Need, Option<Principal>), Refused> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let from_proxy = access.trusts(peer);
    // HTTP/2: the host is the URI's authority. Whatever a client sent
    // under our internal name is dropped first.
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    req.headers_mut().remove(AUTHORITY);
    if let Some(a) = authority
        && !req.headers().contains_key(header::HOST)
        && let Ok(v) = axum::http::HeaderValue::from_str(&a)
    {
        req.headers_mut().insert(AUTHORITY, v);
    }
    let headers = req.headers();
    access.check_host(headers, from_proxy)?;
    let method = req.method().clone();
    if !safe(&method) {
        check_origin(headers, from_proxy)?;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let need = (access.classify)(&method, &route);
    let who = access.authenticate(headers, from_proxy).await?;
    let Need::Role { role, .. } = need else {
        return Ok((need, who));
    };
    let Some(p) = who else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "log in first: a session (the dashboard's login), an API token (Authorization: Bearer keel_…, from keel token create)".into(),
        ));
    };
    if p.role < role {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            format!(
                "{method} {route} needs the {role} role; {} is {}",
                p.name, p.role
            ),
        ));
    }
    if let Via::Session(csrf) = &p.via
        && !safe(&method)
    {
        let echoed = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !echoed.is_some_and(|e| constant_eq(e, csrf)) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                format!(
                    "a change from a browser session must carry its CSRF token in {CSRF_HEADER} (reload the page)"
                ),
            ));
        }
    }
    Ok((need, Some(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports_and_origins_match_their_host() {
        assert_eq!(host_name("[::1]:7070"), "::1");
        assert_eq!(host_name("keel.example:7070"), "keel.example");
        assert_eq!(host_name("keel.example"), "keel.example");
        assert_eq!(host_name("localhost.:7070"), "localhost");
        assert_eq!(host_name("::1"), "::1");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7070".parse().expect("v"));
        h.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().expect("v"));
        assert!(check_origin(&h, false).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().expect("v"));
        assert!(check_origin(&h, false).is_err());
        h.insert(header::ORIGIN, "null".parse().expect("v"));
        assert!(
            check_origin(&h, false).is_err(),
            "a sandboxed page's origin"
        );
        h.insert(header::HOST, "keel.example".parse().expect("v"));
        h.insert(header::ORIGIN, "http://keel.example:80".parse().expect("v"));
        assert!(
            check_origin(&h, false).is_ok(),
            "the default port is the same origin"
        );
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().expect("v"));
        assert!(check_origin(&h, false).is_err());
        // HTTP/2: no Host, the authority the guard copied.
        let mut h2 = HeaderMap::new();
        h2.insert(AUTHORITY, "127.0.0.1:7070".parse().expect("v"));
        h2.insert(header::ORIGIN, "https://127.0.0.1:7070".parse().expect("v"));
        assert!(check_origin(&h2, false).is_ok());
        h2.insert(header::ORIGIN, "https://evil.example".parse().expect("v"));
        assert!(check_origin(&h2, false).is_err());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; keel_session=abc ; b=2".parse().expect("v"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
