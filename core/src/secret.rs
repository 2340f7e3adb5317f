//! Secrets in configuration (passwords, tokens): read as plain strings,
//! never shown. `keel config` (inside [`redacted`]) and debug output
//! print `<redacted>` in their place.

use serde::{Deserialize, Serialize, Serializer};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// Whether `url` carries credentials (`scheme://user:pass@host`): such
/// a URL is shown in metrics, status and logs, so configs that take a
/// token refuse it.
pub fn url_has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// A password or token from a config file.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A bearer token given as this secret or as the first line of
    /// `file` (the config's `{field}` and `{field}_file`): `None` when
    /// neither is set. An error, naming the field, when both are, when
    /// the file cannot be read, or when the token is not what an HTTP
    /// header carries byte for byte (printable ASCII, no spaces: a pasted
    /// `Bearer …` is refused here, not by the server).
    pub fn token_or_file(
        &self,
        file: &std::path::Path,
        field: &str,
    ) -> Result<Option<String>, String> {
        let token = match (self.is_empty(), file.as_os_str().is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => self.0.trim().to_owned(),
            (true, false) => std::fs::read_to_string(file)
                .map_err(|e| format!("{field}_file: cannot read {}: {e}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            (false, false) => {
                return Err(format!("{field}: give {field} or {field}_file, not both"));
            }
        };
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "{field}: must be the token alone, printable ASCII without spaces"
            ));
        }
        Ok(Some(token))
    }
}

/// Why an `Authorization` header carries no bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No header at all.
    Missing,
    /// A header that is not `Bearer <token>`.
    Malformed,
}

/// The token of an `Authorization: Bearer <token>` header value (the
/// scheme in any case, spaces around the token trimmed), given as the
/// header's raw bytes, or `None` for no header.
pub fn bearer(value: Option<&[u8]>) -> Result<&str, BearerError> {
    let value = value.ok_or(BearerError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(BearerError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

/// Whether `given` equals `want`, compared without an early exit so the
/// time taken says nothing of how much of a guess was right (the length
/// of `want` aside).
pub fn same_token(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A webhook URL as people and metrics are shown it: everything after
/// its host replaced by `/<redacted>` (a webhook's path is often its
/// secret, as Slack's and Discord's are) and its user info by `***`;
/// where it goes is not secret.
pub fn redact_url_path(url: &str) -> String {
    let url = without_userinfo(url);
    let host_start = url.find("://").map_or(0, |i| i + 3);
    match url[host_start..].find(['/', '?', '#']) {
        Some(i) if host_start + i + 1 < url.len() => {
            format!("{}/{}", &url[..host_start + i], REDACTED)
        }
        _ => url,
    }
}

/// `url` with the password of its user info as `***`
/// (`postgres://keel:***@db/keel`); other URLs unchanged.
pub fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `url` without the credentials of its user info (`https://***@am:9093`),
/// for a metric label or a log line.
pub fn without_userinfo(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[s + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..s + 3], &rest[at..]),
        None => url.to_owned(),
    }
}

/// A config as people are shown it (`keel config`, the collector's
/// `/api/v1/status/config`): secrets as `<redacted>`, passwords inside
/// URLs as `***`, and the paths and user info of webhook URLs (often
/// their token, as Slack's and Discord's paths are) hidden.
pub fn shown<T: Serialize>(config: &T) -> serde_json::Result<serde_json::Value> {
    fn walk(v: &mut serde_json::Value, webhooks: bool) {
        match v {
            serde_json::Value::String(s) if webhooks => *s = redact_url_path(s),
            serde_json::Value::String(s) if s.contains("://") => *s = redact_url_password(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, webhooks)),
            serde_json::Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    walk(x, k == "webhooks");
                }
            }
            _ => {}
        }
    }
    let mut v = redacted(|| serde_json::to_value(config))?;
    walk(&mut v, false);
    Ok(v)
}

thread_local! {
    /// Whether secrets serialize as [`REDACTED`] on this thread now.
    static REDACTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` (a serialization to show a config: `keel config`, an incident
/// bundle) with every [`Secret`] written as `<redacted>`. Elsewhere a
/// secret serializes as itself: config loading round-trips the config
/// through JSON to apply environment overrides, and must keep it.
pub fn redacted<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REDACTING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REDACTING.with(|r| r.replace(true)));
    f()
}

/// Serialized as itself, but as `<redacted>` inside [`redacted`] (and
/// `""` when empty either way, so that "not set" still shows).
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hide = !self.0.is_empty() && REDACTING.with(std::cell::Cell::get);
        s.serialize_str(if hide { REDACTED } else { &self.0 })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { REDACTED })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_webhook_is_shown_without_its_path_or_user_info() {
        use super::redact_url_path;
        assert_eq!(
            redact_url_path("https://bot:t0ken@hooks.example.com/T0/B0/x?y=1"),
            "https://***@hooks.example.com/<redacted>"
        );
        assert_eq!(
            redact_url_path("https://tok@h/p"),
            "https://***@h/<redacted>"
        );
        assert_eq!(redact_url_path("http://h:8080"), "http://h:8080");
    }

    #[test]
    fn credentials_in_a_url_are_found_and_an_at_sign_in_a_path_is_not() {
        assert!(url_has_credentials("http://u:pw@vm:8428/api/v1/write"));
        assert!(url_has_credentials("https://token@vm"));
        assert!(!url_has_credentials("http://vm:8428/api/v1/write"));
        assert!(!url_has_credentials("http://vm:8428/a@b?x=@"));
    }

    use super::*;

    #[test]
    fn a_bearer_header_yields_its_token_and_nothing_else_does() {
        assert_eq!(bearer(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some(b"  bearer   abc  ")), Ok("abc"));
        assert_eq!(bearer(None), Err(BearerError::Missing));
        for bad in [
            &b"Basic abc"[..],
            b"abc",
            b"Bearer ",
            b"Bearer",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(bearer(Some(bad)), Err(BearerError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn tokens_compare_equal_only_when_every_byte_is() {
        assert!(same_token(b"s3cret", b"s3cret"));
        assert!(!same_token(b"s3cres", b"s3cret"));
        assert!(!same_token(b"s3cre", b"s3cret"));
        assert!(!same_token(b"", b"s3cret"));
    }

    #[test]
    fn a_secret_reads_as_a_string_and_never_prints() {
        let s: Secret = serde_json::from_str("\"hunter2\"").expect("reads");
        assert_eq!(s.expose(), "hunter2");
        let shown = redacted(|| serde_json::to_string(&s)).expect("json");
        assert_eq!(shown, "\"<redacted>\"");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let empty = Secret::default();
        assert_eq!(
            redacted(|| serde_json::to_string(&empty)).expect("json"),
            "\"\""
        );
        // Outside `redacted` it round-trips (config loading relies on it).
        let back: Secret =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("reads");
        assert_eq!(back.expose(), "hunter2");
    }

    /// Config loading serializes and reads back the whole config to apply
    /// `KEEL_…` overrides: a secret must come out as it went in.
    #[test]
    fn a_secret_survives_the_environment_override_round_trip() {
        #[derive(Serialize, Deserialize)]
        struct C {
            password: Secret,
        }
        let c = crate::config::apply_env_overrides(
            C {
                password: Secret::new("hunter2"),
            },
            Vec::new(),
        )
        .expect("round trip");
        assert_eq!(c.password.expose(), "hunter2");
    }
}

#[cfg(test)]
mod userinfo_tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_whatever_its_shape() {
        assert_eq!(
            without_userinfo("https://u:p@am:9093/x"),
            "https://***@am:9093/x"
        );
        assert_eq!(
            without_userinfo("http://token@am:9093"),
            "http://***@am:9093"
        );
        assert_eq!(without_userinfo("http://am:9093/a@b"), "http://am:9093/a@b");
        assert_eq!(without_userinfo("am:9093"), "am:9093");
    }
}
