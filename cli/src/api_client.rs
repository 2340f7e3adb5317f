//! The HTTP client the CLI's API commands share (`keel query`, `logs`,
//! `silence`, `ack`, `events`, `incident`, `failover`): with `KEEL_TOKEN`
//! set, each request carries it as `Authorization: Bearer …` (a token from
//! `keel token create`), as a collector with `collector.auth.login` wants.

/// A client carrying `KEEL_TOKEN`, if set.
pub fn client() -> reqwest::Client {
    builder().build().unwrap_or_default()
}

/// A client builder carrying `KEEL_TOKEN`, if set.
pub fn builder() -> reqwest::ClientBuilder {
    let token = std::env::var("KEEL_TOKEN").ok();
    reqwest::Client::builder()
        .default_headers(keel_tls::bearer(token.as_deref()).unwrap_or_default())
}
