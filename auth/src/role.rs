//! Roles: what a person or an API token may do.

use serde::{Deserialize, Serialize};

/// A role, ordered: each may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything: queries, dashboards, alerts, logs, traces,
    /// incidents.
    Viewer,
    /// Also changes what alerting does: silences, acknowledgements, rule
    /// reloads, incident recordings and replays.
    Editor,
    /// Also what the controller does and who may log in: scaling and
    /// failover overrides, users, API tokens, the audit.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    /// The role's name as configured and shown.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not a role: viewer, editor or admin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_by_name_and_each_includes_the_ones_before() {
        assert_eq!("Editor".parse::<Role>(), Ok(Role::Editor));
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin > Role::Editor && Role::Editor > Role::Viewer);
    }
}
