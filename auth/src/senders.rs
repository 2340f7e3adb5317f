//! Sender tokens: what an agent, an OpenTelemetry SDK or a Prometheus
//! remote-writing server presents (`Authorization: Bearer <token>`, as an
//! HTTP header or gRPC metadata) to have its data taken.
//!
//! Tokens are kept hashed (SHA-256) in memory and compared in constant
//! time against every configured one. With no token configured, ingest
//! is open, as on a loopback-only collector.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::quota::{Quota, QuotaLimits};
use keel_core::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable token is no token.
pub const MIN_TOKEN_LEN: usize = 16;

/// One sender's token in `collector.auth.senders`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderToken {
    /// Who sends with it (a tenant, an environment, a fleet of agents).
    pub name: String,
    /// The token (at least 16 characters). Give this or `token_file`.
    pub token: Secret,
    /// A file whose first line is the token, to keep it out of keel.yaml.
    pub token_file: PathBuf,
    /// This sender's share: its ingestion rate and active series (none:
    /// only the collector's own limits).
    pub limits: QuotaLimits,
}

impl AuthConfig {
    /// The configured tokens, read and hashed.
    pub fn senders(&self) -> Result<Senders, String> {
        let mut tokens = Vec::with_capacity(self.senders.len());
        for (i, s) in self.senders.iter().enumerate() {
            let token = s
                .read()
                .map_err(|e| format!("collector.auth.senders[{i}]: {e}"))?;
            tokens.push(known(&s.name, &token, s.limits));
        }
        Ok(Senders {
            tokens: Arc::new(tokens),
            refused: Arc::default(),
        })
    }
}

impl SenderToken {
    /// The token, from the config or its file (checked as
    /// [`AuthConfig::validate`] checks it).
    pub fn read(&self) -> Result<String, String> {
        let token = self
            .token
            .token_or_file(&self.token_file, "token")?
            .ok_or("give token or token_file")?;
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        Ok(token)
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// One configured sender: name, token hash, and its quota when it has
/// limits.
type Known = (String, [u8; 32], Option<Arc<Quota>>);

/// A sender as kept: its token hashed, a quota when it has limits.
fn known(name: &str, token: &str, limits: QuotaLimits) -> Known {
    let quota = limits.any().then(|| Arc::new(Quota::new(name, limits)));
    (name.to_owned(), digest(token.as_bytes()), quota)
}

/// A sender a request's token names, with its quota.
type Found<'a> = (&'a str, Option<&'a Arc<Quota>>);

/// The sender tokens in force, hashed, and the refusals so far.
#[derive(Clone, Default)]
pub struct Senders {
    tokens: Arc<Vec<Known>>,
    /// Refusals by [`Refusal`] (missing, malformed, wrong).
    refused: Arc<[AtomicU64; 3]>,
}

/// Why a sender was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <token>`.
    Malformed,
    /// A token no sender has.
    Wrong,
}

impl Refusal {
    /// Every reason, in the order [`Senders::refused`] counts them.
    pub const ALL: [Refusal; 3] = [Refusal::Missing, Refusal::Malformed, Refusal::Wrong];

    /// The reason as a label value.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Wrong => "wrong",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "a sender token is required: send Authorization: Bearer <token>",
            Refusal::Malformed => "the Authorization header is not Bearer <token>",
            Refusal::Wrong => "the sender token is not valid",
        }
    }
}

impl Senders {
    /// Senders for `tokens` (name, token), for tests and tools.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            tokens: Arc::new(
                tokens
                    .into_iter()
                    .map(|(n, t)| known(n, t, QuotaLimits::default()))
                    .collect(),
            ),
            refused: Arc::default(),
        }
    }

    /// Requests refused so far, by reason (for the collector's /metrics).
    pub fn refused(&self) -> [(Refusal, u64); 3] {
        Refusal::ALL.map(|r| (r, self.refused[r as usize].load(Ordering::Relaxed)))
    }

    /// Whether ingest is open (no token configured).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Every sender's quota (those with limits), for the collector's
    /// /metrics.
    pub fn quotas(&self) -> impl Iterator<Item = &Arc<Quota>> {
        self.tokens.iter().filter_map(|(_, _, q)| q.as_ref())
    }

    /// The sender whose token `headers` carry (`None` when ingest is
    /// open), or why there is none.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
        self.find(headers).map(|f| f.map(|(name, _)| name))
    }

    /// As [`Self::check`], with the sender's quota.
    fn find(&self, headers: &HeaderMap) -> Result<Option<Found<'_>>, Refusal> {
        if self.is_open() {
            return Ok(None);
        }
        let token = keel_core::secret::bearer(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .map_err(|e| match e {
            keel_core::secret::BearerError::Missing => Refusal::Missing,
            keel_core::secret::BearerError::Malformed => Refusal::Malformed,
        })?;
        let presented = digest(token.as_bytes());
        // Every token is compared, in constant time, so the time taken
        // says nothing of which one came close.
        let mut found = None;
        for (name, hash, quota) in self.tokens.iter() {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some((name.as_str(), quota.as_ref()));
            }
        }
        found.map(Some).ok_or(Refusal::Wrong)
    }
}

/// The sender a request came from, for handlers that want it.
#[derive(Debug, Clone)]
pub struct Sender(pub String);

/// Middleware: every request needs a sender token (the OTLP listeners).
pub async fn require_sender(State(senders): State<Senders>, req: Request, next: Next) -> Response {
    admit(&senders, req, next).await
}

async fn admit(senders: &Senders, mut req: Request, next: Next) -> Response {
    match senders.find(req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some((name, quota))) => {
            let sender = Sender(name.to_owned());
            req.extensions_mut().insert(sender);
            // Handlers that decode a batch take it against the quota.
            if let Some(q) = quota {
                req.extensions_mut().insert(q.clone());
            }
            next.run(req).await
        }
        Err(why) => {
            senders.refused[why as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = why.name(), path = %req.uri().path(), "ingest refused: sender token");
            refuse(req.headers(), why)
        }
    }
}

/// 401 with a `WWW-Authenticate` challenge; to a gRPC client, status 16
/// (UNAUTHENTICATED) in a trailers-only response, as gRPC requires.
fn refuse(headers: &HeaderMap, why: Refusal) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let mut r = StatusCode::OK.into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("16"));
        h.insert("grpc-message", HeaderValue::from_static(why.message()));
        return r;
    }
    let body = format!(
        r#"{{"status":"error","errorType":"unauthorized","error":"{}"}}"#,
        why.message()
    );
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer realm=\"keel\""),
            (header::CONTENT_TYPE, "application/json"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    const TOKEN: &str = "s3cr3t-token-of-the-edge-fleet";

    fn app(senders: Senders) -> Router {
        Router::new()
            .route("/v1/metrics", post(|| async { "taken" }))
            .layer(axum::middleware::from_fn_with_state(
                senders,
                require_sender,
            ))
    }

    async fn send(app: Router, auth: Option<&str>, grpc: bool) -> Response {
        let mut r = Request::post("/v1/metrics");
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        if grpc {
            r = r.header(header::CONTENT_TYPE, "application/grpc");
        }
        app.oneshot(r.body(Body::empty()).expect("request"))
            .await
            .expect("response")
    }

    #[tokio::test]
    async fn ingest_takes_the_right_token_and_refuses_the_rest() {
        let senders = Senders::new([("edge", TOKEN), ("ci", "another-token-0123456789")]);
        let ok = send(
            app(senders.clone()),
            Some(&format!("Bearer {TOKEN}")),
            false,
        )
        .await;
        assert_eq!(ok.status(), StatusCode::OK);
        let lower = send(
            app(senders.clone()),
            Some(&format!("bearer {TOKEN}")),
            false,
        )
        .await;
        assert_eq!(
            lower.status(),
            StatusCode::OK,
            "the scheme is case-insensitive"
        );
        for (auth, why) in [
            (None, "required"),
            (Some("Bearer not-the-token-at-all-000"), "not valid"),
            (Some(&format!("Basic {TOKEN}") as &str), "not Bearer"),
            (Some(TOKEN), "not Bearer"),
        ] {
            let r = send(app(senders.clone()), auth, false).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Bearer realm=\"keel\""
            );
            let body = axum::body::to_bytes(r.into_body(), 1 << 16)
                .await
                .expect("body");
            assert!(String::from_utf8_lossy(&body).contains(why), "{auth:?}");
        }
        let counted: Vec<u64> = senders.refused().iter().map(|(_, n)| *n).collect();
        assert_eq!(counted, [1, 2, 1], "missing, malformed, wrong");
    }

    #[tokio::test]
    async fn a_grpc_sender_without_a_token_gets_unauthenticated() {
        let senders = Senders::new([("edge", TOKEN)]);
        let r = send(app(senders), None, true).await;
        assert_eq!(r.status(), StatusCode::OK, "gRPC errors travel in headers");
        assert_eq!(r.headers()["grpc-status"], "16");
    }

    #[tokio::test]
    async fn with_no_token_configured_ingest_is_open() {
        let r = send(app(Senders::default()), None, false).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn the_config_reports_every_problem_with_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).expect("write");
        let config = AuthConfig {
            senders: vec![
                SenderToken {
                    name: "edge".into(),
                    token_file: file,
                    ..Default::default()
                },
                SenderToken {
                    name: "edge".into(),
                    token: Secret::new("short"),
                    ..Default::default()
                },
                SenderToken {
                    name: String::new(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut problems = Vec::new();
        config.validate("collector.auth", &mut problems);
        assert_eq!(
            problems,
            vec![
                "collector.auth.senders[1].name: \"edge\" is named twice",
                "collector.auth.senders[1]: the token is shorter than 16 characters",
                "collector.auth.senders[2].name: give the sender a name",
                "collector.auth.senders[2]: give token or token_file",
            ]
        );
        // The file's token is the one in force.
        let senders = AuthConfig {
            senders: config.senders[..1].to_vec(),
            ..Default::default()
        }
        .senders()
        .expect("reads");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("value"),
        );
        assert_eq!(senders.check(&h), Ok(Some("edge")));
    }
}
