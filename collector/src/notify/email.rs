//! Pages as email, through lettre over SMTP.
//!
//! Subject: `[P0 FIRING] ShopErrorRateCritical: lb fails 60% of requests`
//! (the `summary` annotation, else the alert's labels). The body says
//! what, severity, since when, the value, every label and annotation
//! (a `runbook` link among them), and a dashboard link.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::route::{Kind, Page};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP (a local relay).
    #[default]
    None,
    /// Plain, upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// `collector.notify.email`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP server.
    pub smtp_host: String,
    /// Its port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub security: Security,
    /// Login ("": none).
    pub username: String,
    /// Password.
    pub password: String,
    /// Sender address.
    pub from: String,
    /// Receivers ([]: no email is sent; pages are still recorded).
    pub to: Vec<String>,
    /// How long one send may take.
    #[serde(with = "keel_core::duration")]
    pub timeout: Duration,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            security: Security::None,
            username: String::new(),
            password: String::new(),
            from: "Keel <keel@localhost>".into(),
            to: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl EmailConfig {
    /// Push one message per problem.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let at = "collector.notify.email";
        if let Err(e) = self.from.parse::<Mailbox>() {
            problems.push(format!("{at}.from: {:?}: {e}", self.from));
        }
        for (i, t) in self.to.iter().enumerate() {
            if let Err(e) = t.parse::<Mailbox>() {
                problems.push(format!("{at}.to[{i}]: {t:?}: {e}"));
            }
        }
        if !self.to.is_empty() && self.smtp_host.trim().is_empty() {
            problems.push(format!("{at}.smtp_host: needed to send to {:?}", self.to));
        }
    }
}

/// The subject line of a page.
pub fn subject(p: &Page) -> String {
    let a = &p.alert;
    let kind = match p.kind {
        Kind::Firing => "FIRING",
        Kind::Resolved => "RESOLVED",
    };
    let name = a
        .labels
        .get("alertname")
        .map(String::as_str)
        .unwrap_or("alert");
    let what = a.annotations.get("summary").cloned().unwrap_or_else(|| {
        a.labels
            .iter()
            .filter(|(k, _)| *k != "alertname" && *k != "severity")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    format!("[{} {kind}] {name}: {what}", a.severity.as_str())
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(ms)).to_string()
}

/// The plain-text body of a page.
pub fn body(p: &Page, dashboard: &str) -> String {
    let a = &p.alert;
    let mut out = String::new();
    let name = a
        .labels
        .get("alertname")
        .map(String::as_str)
        .unwrap_or("alert");
    match p.kind {
        Kind::Firing => out.push_str(&format!("{name} is FIRING ({}).\n\n", p.reason)),
        Kind::Resolved => out.push_str(&format!("{name} is RESOLVED.\n\n")),
    }
    out.push_str(&format!("Severity: {}\n", a.severity.as_str()));
    if let Some(f) = a.fired_at_ms {
        out.push_str(&format!("Firing since: {}\n", time(f)));
    }
    if let (Kind::Resolved, Some(r)) = (p.kind, a.resolved_at_ms) {
        out.push_str(&format!("Resolved at: {}\n", time(r)));
    }
    out.push_str(&format!(
        "Value: {}\n",
        crate::promql::format_value(a.value)
    ));
    if !a.annotations.is_empty() {
        out.push_str("\nAnnotations:\n");
        for (k, v) in &a.annotations {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    out.push_str("\nLabels:\n");
    for (k, v) in &a.labels {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    if !dashboard.is_empty() {
        out.push_str(&format!(
            "\nDashboard: {}/alerts?alertname={name}\n",
            dashboard.trim_end_matches('/')
        ));
    }
    out
}

/// Send one page to every receiver; the error says why not.
pub async fn send(c: &EmailConfig, p: &Page, dashboard: &str) -> Result<(), String> {
    let from: Mailbox = c.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut m = Message::builder().from(from).subject(subject(p));
    for t in &c.to {
        m = m.to(t.parse::<Mailbox>().map_err(|e| format!("to {t:?}: {e}"))?);
    }
    let message = m.body(body(p, dashboard)).map_err(|e| e.to_string())?;
    let builder = match c.security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.smtp_host),
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.smtp_host)
            .map_err(|e| e.to_string())?,
        Security::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&c.smtp_host).map_err(|e| e.to_string())?
        }
    };
    let mut builder = builder.port(c.smtp_port).timeout(Some(c.timeout));
    if !c.username.is_empty() {
        builder = builder.credentials(Credentials::new(c.username.clone(), c.password.clone()));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("{}:{}: {e}", c.smtp_host, c.smtp_port))
}
