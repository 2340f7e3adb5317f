//! The environment that puts every listener of `keel up` on a free port
//! (the lb's and the supervisor's have flags), so benches and tests can
//! run it beside another.

/// `KEEL_…` overrides: port 0 for the collector's three listeners, the
/// agent's two and the controller's.
pub const ENV: [(&str, &str); 6] = [
    ("KEEL_COLLECTOR__OTLP_HTTP_PORT", "0"),
    ("KEEL_COLLECTOR__API_PORT", "0"),
    ("KEEL_COLLECTOR__OTLP_GRPC_PORT", "0"),
    ("KEEL_AGENT__LISTEN", "127.0.0.1:0"),
    ("KEEL_AGENT__OTLP_RECEIVER", "127.0.0.1:0"),
    ("KEEL_CONTROLLER__LISTEN", "127.0.0.1:0"),
];
