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

use super::Failure;
use super::route::{AlertView, Kind, Page};
use crate::rules::State;

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
    pub password: keel_core::secret::Secret,
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
            password: keel_core::secret::Secret::default(),
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

/// The subject line of a page: the alert's name and summary when it is
/// alone, else how many fire and the group's labels.
pub fn subject(p: &Page) -> String {
    let kind = match p.kind {
        Kind::Firing => "FIRING",
        Kind::Resolved => "RESOLVED",
    };
    let sev = p.severity.as_str();
    match p.alerts.as_slice() {
        [a] => {
            let what = a.annotations.get("summary").cloned().unwrap_or_else(|| {
                a.labels
                    .iter()
                    .filter(|(k, _)| *k != "alertname" && *k != "severity")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            format!("[{sev} {kind}] {}: {what}", name(a))
        }
        all => {
            let firing = all.iter().filter(|a| a.state == State::Firing).count();
            let count = match p.kind {
                Kind::Firing => firing,
                Kind::Resolved => all.len(),
            };
            let group: Vec<String> = p
                .group
                .iter()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let names = p.alertnames().join(", ");
            if group.is_empty() {
                format!("[{sev} {kind}:{count}] {names}")
            } else {
                format!("[{sev} {kind}:{count}] {names} ({})", group.join(", "))
            }
        }
    }
}

fn name(a: &AlertView) -> &str {
    a.labels
        .get("alertname")
        .map(String::as_str)
        .unwrap_or("alert")
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(ms)).to_string()
}

/// The plain-text body of a page: a line for the page, then each alert
/// (firing ones first) with its severity, times, value, annotations (the
/// runbook link) and labels, and a dashboard link.
pub fn body(p: &Page, dashboard: &str) -> String {
    let mut out = String::new();
    let names = p.alertnames().join(", ");
    match (p.kind, p.alerts.len()) {
        (Kind::Firing, 1) => out.push_str(&format!("{names} is FIRING ({}).\n\n", p.reason)),
        (Kind::Resolved, 1) => out.push_str(&format!("{names} is RESOLVED.\n\n")),
        (Kind::Firing, n) => {
            let firing = p.alerts.iter().filter(|a| a.state == State::Firing).count();
            out.push_str(&format!(
                "{firing} of {n} alerts FIRING ({}): {names}.\n\n",
                p.reason
            ));
        }
        (Kind::Resolved, n) => out.push_str(&format!("{n} alerts RESOLVED: {names}.\n\n")),
    }
    for (i, a) in p.alerts.iter().enumerate() {
        if p.alerts.len() > 1 {
            let state = match a.state {
                State::Firing => "FIRING",
                _ => "RESOLVED",
            };
            out.push_str(&format!("--- {}. {} ({state})\n", i + 1, name(a)));
        }
        alert_text(&mut out, a);
        out.push('\n');
    }
    if !dashboard.is_empty() {
        let names: Vec<&str> = p.alertnames();
        out.push_str(&format!(
            "Dashboard: {}/alerts?alertname={}\n",
            dashboard.trim_end_matches('/'),
            names.join("|")
        ));
    }
    out
}

fn alert_text(out: &mut String, a: &AlertView) {
    out.push_str(&format!("Severity: {}\n", a.severity.as_str()));
    if let Some(f) = a.fired_at_ms {
        out.push_str(&format!("Firing since: {}\n", time(f)));
    }
    if let (State::Resolved, Some(r)) = (a.state, a.resolved_at_ms) {
        out.push_str(&format!("Resolved at: {}\n", time(r)));
    }
    out.push_str(&format!("Value: {}\n", keel_promql::format_value(a.value)));
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
}

/// Send one page to every receiver; the error says why not.
/// The `Message-ID` of notification `id` (sender `from`): the same on
/// every attempt, so a receiver can drop a duplicate.
pub fn message_id(id: &str, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .filter(|d| !d.is_empty())
        .unwrap_or("keel.invalid");
    format!("<keel.{id}@{domain}>")
}

/// Send page `p` as notification `id`. A message that cannot be built (a
/// bad address) and an SMTP 5xx are refusals for good; the rest is
/// retried by the caller.
pub async fn send(c: &EmailConfig, p: &Page, id: &str, dashboard: &str) -> Result<(), Failure> {
    let refused = |message: String| Failure {
        message,
        permanent: true,
    };
    let from: Mailbox = c.from.parse().map_err(|e| refused(format!("from: {e}")))?;
    let mut m = Message::builder()
        .from(from)
        .subject(subject(p))
        .message_id(Some(message_id(id, &c.from)));
    for t in &c.to {
        m = m.to(t
            .parse::<Mailbox>()
            .map_err(|e| refused(format!("to {t:?}: {e}")))?);
    }
    let message = m
        .body(body(p, dashboard))
        .map_err(|e| refused(e.to_string()))?;
    let builder = match c.security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.smtp_host),
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.smtp_host)
            .map_err(|e| refused(e.to_string()))?,
        Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.smtp_host)
            .map_err(|e| refused(e.to_string()))?,
    };
    let mut builder = builder.port(c.smtp_port).timeout(Some(c.timeout));
    if !c.username.is_empty() {
        builder = builder.credentials(Credentials::new(
            c.username.clone(),
            c.password.expose().to_owned(),
        ));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| Failure {
            message: format!("{}:{}: {e}", c.smtp_host, c.smtp_port),
            permanent: e.is_permanent(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Severity;
    use std::collections::BTreeMap;

    fn view(instance: &str, state: State) -> AlertView {
        AlertView {
            labels: BTreeMap::from([
                ("alertname".to_owned(), "Down".to_owned()),
                ("service".to_owned(), "shop-web".to_owned()),
                ("instance".to_owned(), instance.to_owned()),
            ]),
            annotations: BTreeMap::from([("summary".to_owned(), format!("{instance} is down"))]),
            state,
            severity: Severity::P0,
            value: 1.0,
            fired_at_ms: Some(1_796_205_600_000),
            resolved_at_ms: (state == State::Resolved).then_some(1_796_205_660_000),
        }
    }

    fn page(kind: Kind, alerts: Vec<AlertView>) -> Page {
        Page {
            kind,
            severity: Severity::P0,
            group: BTreeMap::from([
                ("alertname".to_owned(), "Down".to_owned()),
                ("service".to_owned(), "shop-web".to_owned()),
            ]),
            alerts,
            at_ms: 1_796_205_660_000,
            reason: "fired".into(),
        }
    }

    #[test]
    fn one_alert_reads_as_itself_and_a_group_says_how_many_and_lists_each() {
        let one = page(Kind::Firing, vec![view("web-1", State::Firing)]);
        assert_eq!(subject(&one), "[P0 FIRING] Down: web-1 is down");
        let group = page(
            Kind::Firing,
            vec![
                view("web-1", State::Firing),
                view("web-2", State::Firing),
                view("web-3", State::Resolved),
            ],
        );
        assert_eq!(subject(&group), "[P0 FIRING:2] Down (service=shop-web)");
        let b = body(&group, "http://keel.example/");
        assert!(b.starts_with("2 of 3 alerts FIRING (fired): Down."), "{b}");
        assert!(b.contains("--- 3. Down (RESOLVED)"), "{b}");
        assert!(b.contains("Resolved at: 2026-12-02T10:01:00Z"), "{b}");
        assert!(b.contains("  instance: web-2"), "{b}");
        assert!(
            b.ends_with("Dashboard: http://keel.example/alerts?alertname=Down\n"),
            "{b}"
        );
        let done = page(
            Kind::Resolved,
            vec![
                view("web-1", State::Resolved),
                view("web-2", State::Resolved),
            ],
        );
        assert_eq!(subject(&done), "[P0 RESOLVED:2] Down (service=shop-web)");
    }
}
