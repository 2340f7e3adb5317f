//! What each route of the API listener needs: the table the people guard
//! (`keel_auth::access`) reads.
//!
//! Reads need a viewer; Prometheus' read API also answers POST (Grafana
//! sends its queries so), and so do the dashboards' panel queries.
//! Alerting's changes need an editor; people, tokens and the audit need
//! an admin. A write route nobody listed here needs an admin: a route
//! added later is guarded by default, and the route table test names it.

use axum::http::Method;
use keel_auth::{Need, Role};

/// The need of `method` on the route pattern `route`.
pub fn need(method: &Method, route: &str) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let role = |role, change| Need::Role { role, change };
    match route {
        // The login page and its files, and logging in and out.
        "/" | "/ui" | "/ui/" | "/ui/{*path}" | "/api/v1/login" | "/api/v1/logout"
        | "/api/v1/session" => Need::Open,
        // Load balancers and orchestrators probe these without a login,
        // as they probe Prometheus.
        "/-/healthy" | "/-/ready" => Need::Open,
        "/api/v1/users"
        | "/api/v1/users/{name}"
        | "/api/v1/tokens"
        | "/api/v1/tokens/{id}"
        | "/api/v1/audit" => role(Role::Admin, !read),
        _ if read => role(Role::Viewer, false),
        // Reads sent as POST.
        "/api/v1/query"
        | "/api/v1/query_range"
        | "/api/v1/series"
        | "/api/v1/labels"
        | "/api/v1/format_query"
        | "/api/v1/query_exemplars"
        | "/api/v1/read"
        | "/api/v1/panels/data"
        | "/api/v1/panels/export"
        | "/api/v1/incidents/{name}/view/{*rest}" => role(Role::Viewer, false),
        // Alerts a Prometheus or vmalert sends every minute: an editor's,
        // but not audited one by one (the audit would grow by a row a
        // send).
        "/api/v2/alerts" => role(Role::Editor, false),
        // A what-if over a recorded incident: changes nothing, costs CPU.
        "/api/v1/incidents/{name}/replay" => role(Role::Editor, false),
        "/api/v1/silences"
        | "/api/v1/silences/{id}"
        | "/api/v2/silences"
        | "/api/v2/silence/{id}"
        | "/api/v1/alerts/ack"
        | "/-/reload"
        | "/api/v1/incidents" => role(Role::Editor, true),
        _ => role(Role::Admin, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlisted_write_needs_an_admin_and_an_unlisted_read_a_viewer() {
        assert_eq!(
            need(&Method::POST, "/api/v1/something/new"),
            Need::Role {
                role: Role::Admin,
                change: true
            }
        );
        assert_eq!(
            need(&Method::GET, "/api/v1/something/new"),
            Need::Role {
                role: Role::Viewer,
                change: false
            }
        );
        assert_eq!(
            need(&Method::POST, "/api/v1/query"),
            Need::Role {
                role: Role::Viewer,
                change: false
            }
        );
        assert_eq!(
            need(&Method::DELETE, "/api/v1/silences/{id}"),
            Need::Role {
                role: Role::Editor,
                change: true
            }
        );
        assert_eq!(need(&Method::POST, "/api/v1/login"), Need::Open);
    }
}
