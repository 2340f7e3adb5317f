//! People on the API (`collector.auth.login`): the route table walked
//! without a token, with a wrong or expired one and as a viewer writing;
//! a browser's login, CSRF, logout; cross-site POSTs and foreign Host
//! headers; a trusted proxy's SSO header; the audit of changes.

use std::sync::Arc;

use crate::common::config;
use keel_auth::directory::Directory;
use keel_auth::{AuthConfig, Need, ProxyConfig, Role, SenderToken};
use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_core::secret::Secret;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const SENDER: &str = "edge-fleet-token-7f3a9c1e";
const PASSWORD: &str = "analytical engine";

fn now_ms() -> i64 {
    keel_core::clock::unix_ms(std::time::SystemTime::now())
}

async fn run(c: CollectorConfig) -> Running {
    let clock: SharedClock = Arc::new(SystemClock);
    start(&c, clock).await.expect("collector starts")
}

/// A collector that wants a login and a sender token, believing a proxy
/// on loopback.
async fn guarded(dir: &std::path::Path) -> Running {
    let mut c = config(dir);
    c.auth = AuthConfig {
        senders: vec![SenderToken {
            name: "edge".into(),
            token: Secret::new(SENDER),
            ..Default::default()
        }],
        login: true,
        proxy: ProxyConfig {
            trusted: vec!["127.0.0.1/32".into()],
            role_header: "X-Forwarded-Role".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    run(c).await
}

fn directory(c: &Running) -> Directory {
    Directory::new(c.state.as_ref().expect("a state store").0.clone())
}

/// Tokens for each role, and one expired.
struct Tokens {
    viewer: String,
    editor: String,
    admin: String,
    expired: String,
}

async fn tokens(d: &Directory) -> Tokens {
    let now = now_ms();
    let make = |name: &'static str, role, exp| {
        let d = d.clone();
        async move {
            d.create_token(name, role, exp, "test", now)
                .await
                .expect("token")
                .0
        }
    };
    Tokens {
        viewer: make("grafana", Role::Viewer, Some(now + 3_600_000)).await,
        editor: make("oncall", Role::Editor, None).await,
        admin: make("ops", Role::Admin, None).await,
        expired: make("old", Role::Admin, Some(now - 1_000)).await,
    }
}

/// The answer to `r` (the test fails if there is none).
async fn answer(r: reqwest::RequestBuilder) -> reqwest::Response {
    r.send().await.expect("answer")
}

/// A concrete path for a route pattern.
fn concrete(route: &str) -> String {
    route
        .split('/')
        .map(|seg| match seg {
            s if s.starts_with("{*") => "a/b".to_owned(),
            s if s.starts_with('{') => "x".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// What each route should need, written down here from the README (not
/// read from the server's table, which this checks).
fn expected(method: &Method, route: &str) -> Need {
    const OPEN: [&str; 9] = [
        "/-/healthy",
        "/-/ready",
        "/",
        "/ui",
        "/ui/",
        "/ui/{*path}",
        "/api/v1/login",
        "/api/v1/logout",
        "/api/v1/session",
    ];
    const ADMIN: [&str; 5] = [
        "/api/v1/users",
        "/api/v1/users/{name}",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/audit",
    ];
    const READS_BY_POST: [&str; 10] = [
        "/api/v1/query",
        "/api/v1/format_query",
        "/api/v1/query_exemplars",
        "/api/v1/read",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/panels/data",
        "/api/v1/panels/export",
        "/api/v1/incidents/{name}/view/{*rest}",
    ];
    const EDITOR_CHANGES: [&str; 7] = [
        "/api/v1/silences",
        "/api/v1/silences/{id}",
        "/api/v2/silences",
        "/api/v2/silence/{id}",
        "/api/v1/alerts/ack",
        "/-/reload",
        "/api/v1/incidents",
    ];
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let need = |role, change| Need::Role { role, change };
    if OPEN.contains(&route) {
        Need::Open
    } else if ADMIN.contains(&route) {
        need(Role::Admin, !read)
    } else if read || READS_BY_POST.contains(&route) {
        need(Role::Viewer, false)
    } else if route == "/api/v1/incidents/{name}/replay" || route == "/api/v2/alerts" {
        need(Role::Editor, false)
    } else if EDITOR_CHANGES.contains(&route) {
        need(Role::Editor, true)
    } else {
        need(Role::Admin, true)
    }
}

async fn send(
    http: &reqwest::Client,
    c: &Running,
    method: &Method,
    path: &str,
    bearer: Option<&str>,
) -> StatusCode {
    let mut r = http.request(method.clone(), format!("http://{}{path}", c.api));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("answer").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_no_token_a_wrong_or_expired_one_and_a_viewer_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let t = tokens(&directory(&c)).await;
    let http = reqwest::Client::new();
    let wrong = format!("keel_{}_{}", "0".repeat(12), "0".repeat(64));
    assert!(c.people_routes.len() >= 40, "{:?}", c.people_routes);
    let mut guarded_routes = 0;
    for route in &c.people_routes {
        let path = concrete(route);
        let mut refused_once = false;
        for m in &METHODS {
            let need = expected(m, route);
            assert_eq!(
                keel_collector::access::need(m, route),
                need,
                "{m} {route}: the server's table says otherwise"
            );
            if need == Need::Open {
                continue;
            }
            for (who, bearer) in [
                ("no token", None),
                ("a wrong token", Some(wrong.as_str())),
                ("an expired token", Some(t.expired.as_str())),
                ("a malformed header", Some("not-a-keel-token")),
            ] {
                let s = send(&http, &c, m, &path, bearer).await;
                assert!(
                    s == StatusCode::UNAUTHORIZED || s == StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} with {who}: {s}"
                );
                refused_once |= s == StatusCode::UNAUTHORIZED;
            }
            if let Need::Role { role, .. } = need
                && role > Role::Viewer
            {
                let s = send(&http, &c, m, &path, Some(&t.viewer)).await;
                assert!(
                    s == StatusCode::FORBIDDEN || s == StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} as a viewer: {s}"
                );
            }
        }
        if expected(&Method::GET, route) != Need::Open {
            assert!(refused_once, "{route}: no method answered 401");
            guarded_routes += 1;
        }
    }
    assert!(guarded_routes >= 35, "{guarded_routes} guarded routes");
    // Ingest on the API listener wants a sender token, not a person.
    assert_eq!(
        c.ingest_routes,
        ["/api/v1/write", "/api/v1/logs", "/api/v1/otlp/v1/metrics"]
    );
    for route in &c.ingest_routes {
        let s = send(&http, &c, &Method::POST, route, Some(&t.admin)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{route} with a person's token");
    }
    // The right roles get through.
    let q = "/api/v1/query?query=vector(1)";
    assert_eq!(
        send(&http, &c, &Method::GET, q, Some(&t.viewer)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&http, &c, &Method::POST, q, Some(&t.viewer)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&http, &c, &Method::POST, "/-/reload", Some(&t.editor)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&http, &c, &Method::GET, "/api/v1/users", Some(&t.editor)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&http, &c, &Method::GET, "/api/v1/users", Some(&t.admin)).await,
        StatusCode::OK
    );
    // The login page loads for anyone.
    assert_eq!(
        send(&http, &c, &Method::GET, "/ui/", None).await,
        StatusCode::OK
    );
}

fn session_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().expect("name=value").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_changes_with_its_csrf_token_and_logs_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let d = directory(&c);
    d.add_user("ada", Role::Editor, PASSWORD, now_ms())
        .await
        .expect("user");
    let admin = tokens(&d).await.admin;
    let http = reqwest::Client::new();
    let base = format!("http://{}", c.api);
    let origin = base.clone();
    let login = |user: &str, password: &str| {
        http.post(format!("{base}/api/v1/login"))
            .header(header::ORIGIN, &origin)
            .json(&json!({"user": user, "password": password}))
            .send()
    };
    let wrong = login("ada", "not the password").await.expect("answer");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let nobody = login("nobody", PASSWORD).await.expect("answer");
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);
    let ok = login("ada", PASSWORD).await.expect("answer");
    assert_eq!(ok.status(), StatusCode::OK);
    let cookie = session_cookie(&ok);
    let v: Value = ok.json().await.expect("json");
    let csrf = v["data"]["csrf"].as_str().expect("csrf").to_owned();
    assert_eq!(v["data"]["role"], "editor");
    let me: Value = http
        .get(format!("{base}/api/v1/session"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(me["data"]["user"], "ada");
    assert_eq!(me["data"]["csrf"], csrf.as_str());
    let silence = json!({"matchers": ["alertname=\"X\""], "duration": "1h", "created_by": "ada", "comment": "t"});
    let post = |csrf: Option<&str>, origin: &str| {
        let mut r = http
            .post(format!("{base}/api/v1/silences"))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, origin)
            .json(&silence);
        if let Some(c) = csrf {
            r = r.header("X-Keel-CSRF", c);
        }
        r.send()
    };
    assert_eq!(
        post(None, &origin).await.expect("answer").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(Some("0000"), &origin).await.expect("answer").status(),
        StatusCode::FORBIDDEN
    );
    // A cross-site page posting with the cookie (even if it had the
    // token) is refused on its Origin.
    assert_eq!(
        post(Some(&csrf), "https://evil.example")
            .await
            .expect("answer")
            .status(),
        StatusCode::FORBIDDEN
    );
    let made = post(Some(&csrf), &origin).await.expect("answer");
    assert_eq!(made.status(), StatusCode::OK);
    // The change is in the audit, with who.
    let audit: Value = http
        .get(format!("{base}/api/v1/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let entries = audit["data"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["who"] == "ada"
            && e["what"] == "POST /api/v1/silences"
            && e["status"] == 200),
        "{audit}"
    );
    // A role change through the API ends the session at once.
    let changed = answer(
        http.put(format!("{base}/api/v1/users/ada"))
            .bearer_auth(&admin)
            .json(&json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        post(Some(&csrf), &origin).await.expect("answer").status(),
        StatusCode::UNAUTHORIZED
    );
    // Log in again, out, and the cookie is worth nothing.
    let again = login("ada", PASSWORD).await.expect("answer");
    let cookie2 = session_cookie(&again);
    let out = answer(
        http.post(format!("{base}/api/v1/logout"))
            .header(header::COOKIE, &cookie2)
            .header(header::ORIGIN, &origin),
    )
    .await;
    assert_eq!(out.status(), StatusCode::OK);
    let after = answer(
        http.get(format!("{base}/api/v1/alerts"))
            .header(header::COOKIE, &cookie2),
    )
    .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    // Five wrong passwords lock the name for a while.
    for _ in 0..5 {
        assert_eq!(
            login("ada", "wrong wrong wrong")
                .await
                .expect("answer")
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = login("ada", PASSWORD).await.expect("answer");
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key(header::RETRY_AFTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_people_and_an_untrusted_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = guarded(dir.path()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", c.api);
    let as_carol = |role: Option<&str>| {
        let mut r = http
            .post(format!("{base}/-/reload"))
            .header("X-Forwarded-User", "carol");
        if let Some(role) = role {
            r = r.header("X-Forwarded-Role", role);
        }
        r.send()
    };
    assert_eq!(
        as_carol(None).await.expect("answer").status(),
        StatusCode::FORBIDDEN,
        "viewer by default"
    );
    assert_eq!(
        as_carol(Some("editor")).await.expect("answer").status(),
        StatusCode::OK
    );
    assert_eq!(
        as_carol(Some("root")).await.expect("answer").status(),
        StatusCode::UNAUTHORIZED
    );

    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir2.path());
    cfg.auth.login = true;
    cfg.auth.proxy.trusted = vec!["10.0.0.0/8".into()];
    let other = run(cfg).await;
    let s = http
        .get(format!("http://{}/api/v1/alerts", other.api))
        .header("X-Forwarded-User", "carol")
        .send()
        .await
        .expect("answer")
        .status();
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a header from an untrusted address names no one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_login_a_cross_site_post_and_a_foreign_host_are_still_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = run(config(dir.path())).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", c.api);
    // A form on another site posting here.
    let cross = answer(
        http.post(format!("{base}/-/reload"))
            .header(header::ORIGIN, "https://evil.example")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("a=1"),
    )
    .await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let fetch_meta = answer(
        http.post(format!("{base}/api/v1/alerts/ack"))
            .header("Sec-Fetch-Site", "cross-site")
            .json(&json!({"matchers": ["alertname=\"X\""]})),
    )
    .await;
    assert_eq!(fetch_meta.status(), StatusCode::FORBIDDEN);
    // DNS rebinding: a browser's request to a name that is not this
    // Keel's (the page thinks it is same-origin).
    let rebound = answer(
        http.get(format!("{base}/api/v1/alerts"))
            .header(header::HOST, "evil.example")
            .header("Sec-Fetch-Site", "same-origin")
            .header("Sec-Fetch-Mode", "cors"),
    )
    .await;
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    let body: Value = rebound.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("collector.auth.hosts"),
        "{body}"
    );
    // Not a browser (Grafana's backend, Prometheus scraping /metrics, the
    // CLI): any name reaches it.
    for path in ["/api/v1/alerts", "/metrics"] {
        let server = answer(
            http.get(format!("{base}{path}"))
                .header(header::HOST, "keel-collector.monitoring.svc"),
        )
        .await;
        assert_eq!(server.status(), StatusCode::OK, "{path}");
    }
    // The same requests from here, and from the CLI (no Origin), pass.
    let same = answer(
        http.post(format!("{base}/-/reload"))
            .header(header::ORIGIN, &base),
    )
    .await;
    assert_eq!(same.status(), StatusCode::OK);
    let cli = answer(http.post(format!("{base}/-/reload"))).await;
    assert_eq!(cli.status(), StatusCode::OK);
    let named = answer(
        http.get(format!("{base}/api/v1/alerts"))
            .header(header::HOST, "localhost"),
    )
    .await;
    assert_eq!(named.status(), StatusCode::OK);
    // Anyone is anonymous, and the session says no login is needed.
    let me: Value = http
        .get(format!("{base}/api/v1/session"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(me["data"]["login"], false);
    assert_eq!(me["data"]["user"], "anonymous");
}
