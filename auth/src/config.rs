//! The `collector.auth` section: sender tokens, and how people log in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::role::Role;
use crate::senders::SenderToken;

/// The `collector.auth` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens senders present on ingest: OTLP/HTTP, OTLP/gRPC, remote
    /// write (`/api/v1/write`) and the log push API (`/api/v1/logs`).
    /// Empty: ingest takes data from anyone who can reach it.
    pub senders: Vec<SenderToken>,
    /// People must log in to use the API and the pages: users from
    /// `keel user add`, API tokens from `keel token create`, or a trusted
    /// proxy's header. Off: whoever reaches the API may do anything (on
    /// loopback only, unless `collector.insecure`).
    pub login: bool,
    /// Names the API answers to (the `Host` header), besides IP
    /// addresses, `localhost` and this machine's hostname: a page on
    /// another name (DNS rebinding) is refused.
    pub hosts: Vec<String>,
    /// How long a browser stays logged in.
    #[serde(with = "keel_core::duration")]
    pub session_ttl: Duration,
    /// Single sign-on by a proxy in front of Keel that has authenticated
    /// the person and names them in a header.
    pub proxy: ProxyConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            senders: Vec::new(),
            login: false,
            hosts: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            proxy: ProxyConfig::default(),
        }
    }
}

/// `collector.auth.proxy`: header-based single sign-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Addresses of the proxies whose header is believed (`10.0.0.7`,
    /// `10.0.0.0/24`). Empty: no header is believed.
    pub trusted: Vec<String>,
    /// The header naming the person.
    pub user_header: String,
    /// A header carrying their role (`viewer`, `editor`, `admin`); empty:
    /// everyone the proxy names has `role`.
    pub role_header: String,
    /// The role of a person the proxy names without a role header.
    pub role: Role,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            user_header: "X-Forwarded-User".into(),
            role_header: String::new(),
            role: Role::Viewer,
        }
    }
}

impl ProxyConfig {
    /// The trusted proxies' networks (an address is a /32 or /128).
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted
            .iter()
            .map(|t| {
                let t = t.trim();
                t.parse::<ipnet::IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{t:?} is not an address or a network (10.0.0.0/24)"))
            })
            .collect()
    }
}

impl AuthConfig {
    /// Every problem with the section, each naming its place under `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        self.validate_senders(at, problems);
        if self.session_ttl < Duration::from_secs(60)
            || self.session_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            problems.push(format!("{at}.session_ttl: must be between 1m and 30d"));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let bad = h.is_empty()
                || h.contains("://")
                || h.contains([':', '/', ' '])
                || h.starts_with('.');
            if bad {
                problems.push(format!(
                    "{at}.hosts[{i}]: {h:?} is not a host name (no scheme, port or path)"
                ));
            }
        }
        let p = &self.proxy;
        if let Err(e) = p.networks() {
            problems.push(format!("{at}.proxy.trusted: {e}"));
        }
        for (field, name) in [
            ("user_header", &p.user_header),
            ("role_header", &p.role_header),
        ] {
            let required = field == "user_header" && !p.trusted.is_empty();
            if (required || !name.is_empty())
                && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                problems.push(format!("{at}.proxy.{field}: {name:?} is not a header name"));
            }
        }
        if !p.trusted.is_empty() && !self.login {
            problems.push(format!(
                "{at}.proxy: a trusted proxy names people only when {at}.login is true"
            ));
        }
    }

    /// Every problem with the sender tokens.
    fn validate_senders(&self, at: &str, problems: &mut Vec<String>) {
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.senders.iter().enumerate() {
            let here = format!("{at}.senders[{i}]");
            if s.name.trim().is_empty() {
                problems.push(format!("{here}.name: give the sender a name"));
            } else if !names.insert(s.name.as_str()) {
                problems.push(format!("{here}.name: {:?} is named twice", s.name));
            }
            if let Err(e) = s.read() {
                problems.push(format!("{here}: {e}"));
            }
            s.limits.validate(&format!("{here}.limits"), problems);
        }
    }
}
