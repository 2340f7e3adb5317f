//! Configuration loading shared by every part of Keel.
//!
//! Files are YAML, parsed with serde-saphyr so that every error carries the
//! file, line and column. Structs use `#[serde(deny_unknown_fields)]`, so a
//! typo is an error, not a silently ignored key. After parsing, [`Validate`]
//! collects every problem at once rather than stopping at the first.
//!
//! Lookup order for `keel.yaml` ([`find_config_file`]): `--config`, then
//! `./keel.yaml`, then `/etc/keel/keel.yaml`. Environment variables
//! `KEEL_<SECTION>__<KEY>` override the file ([`apply_env_overrides`]);
//! command-line flags override both (applied by the caller).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// Everything that can go wrong loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not fit the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but its values are inconsistent; every problem is listed.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The file (or `<defaults>`/`<environment>`).
        path: String,
        /// One line per problem, each naming its field.
        problems: Vec<String>,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// Validation that reports every problem, each naming its field.
pub trait Validate {
    /// Push one message per problem onto `problems`.
    fn validate(&self, problems: &mut Vec<String>);

    /// Run [`Validate::validate`] and turn any problems into an error for `path`.
    fn check(&self, path: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.validate(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

/// Parse YAML text that came from `path` into `T`.
pub fn parse_yaml<T: DeserializeOwned>(path: &str, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let message = e.without_snippet().to_string();
        // The library's message may end with its own position; keep ours only.
        let message = message
            .split_once(" at line ")
            .map(|(m, _)| m.to_owned())
            .unwrap_or(message);
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// Read and parse a YAML file into `T`, then validate it.
pub fn load_yaml<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let value: T = parse_yaml(&shown, &text)?;
    value
        .check(&shown)
        .map_err(|e| with_lines(e, &shown, &text))?;
    Ok(value)
}

/// Point each validation problem of `err` at its line in `text`: a
/// problem starting `agent.logs[1].path: …` becomes `file:7: agent.logs[1].path: …`.
fn with_lines(err: ConfigError, file: &str, text: &str) -> ConfigError {
    let ConfigError::Invalid { path, problems } = err else {
        return err;
    };
    let Ok(tree) = serde_saphyr::from_str::<Spanned<Node>>(text) else {
        return ConfigError::Invalid { path, problems };
    };
    let problems = problems
        .into_iter()
        .map(|p| {
            let field = p.split_once(':').map_or("", |(f, _)| f);
            match (!field.contains(' '))
                .then(|| line_of(&tree, field))
                .flatten()
            {
                Some(line) => format!("{file}:{line}: {p}"),
                None => p,
            }
        })
        .collect();
    ConfigError::Invalid { path, problems }
}

/// A YAML document's shape with the position of every node: enough to
/// find the line a dotted field path (`a.b[2].c`) was written on.
#[derive(Debug)]
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// A mapping key as written (asked for as a string, so `y` stays `y`
/// rather than YAML 1.1's `true`).
struct Key(String);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key(s.to_owned()))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Key, E> {
                Ok(Key(b.to_string()))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Key, E> {
                Ok(Key(i.to_string()))
            }
            fn visit_u64<E>(self, i: u64) -> Result<Key, E> {
                Ok(Key(i.to_string()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Key, E> {
                Ok(Key(f.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(Key(k)) = m.next_key::<Key>()? {
            entries.push((k, m.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = s.next_element::<Spanned<Node>>()? {
            items.push(n);
        }
        Ok(Node::Seq(items))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
}

/// The line of the deepest node of `tree` on dotted `path` (`agent.logs[1].path`);
/// none when not even its first key is in the file (a default value is wrong).
fn line_of(tree: &Spanned<Node>, path: &str) -> Option<u64> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        steps.push(Err(pieces.next().unwrap_or_default()));
        for index in pieces {
            steps.push(Ok(index.trim_end_matches(']').parse::<usize>().ok()?));
        }
    }
    let mut node = tree;
    let mut line = None;
    for step in steps {
        let next = match (&node.value, step) {
            (Node::Map(entries), Err(key)) => {
                entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            (Node::Seq(items), Ok(i)) => items.get(i),
            _ => None,
        };
        match next {
            Some(n) => {
                line = Some(n.referenced.line());
                node = n;
            }
            None => break,
        }
    }
    line
}

/// Where `keel.yaml` is: `explicit` if given, else `./keel.yaml`, else
/// `/etc/keel/keel.yaml`, else none (built-in defaults apply).
pub fn find_config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    ["keel.yaml", "/etc/keel/keel.yaml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Apply `KEEL_<SECTION>__<KEY>[__<KEY>…]` overrides from `vars` to `config`.
///
/// Names are matched case-insensitively against field names; values are
/// parsed as YAML scalars (`3`, `true`, `250ms`, `sync`). An override naming a
/// field that does not exist is an error, like an unknown key in the file.
pub fn apply_env_overrides<T, I>(config: T, vars: I) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let mut tree = serde_json::to_value(&config).map_err(|e| ConfigError::Env {
        var: "<all>".into(),
        message: e.to_string(),
    })?;
    let mut applied = Vec::new();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix("KEEL_") else {
            continue;
        };
        if !rest.contains("__") {
            continue; // KEEL_LOG and friends are not config paths
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let value: serde_json::Value =
            serde_saphyr::from_str(&raw).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.without_snippet().to_string(),
            })?;
        set_path(&mut tree, &path, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        applied.push(var);
    }
    serde_json::from_value(tree).map_err(|e| ConfigError::Env {
        var: applied.join(","),
        message: e.to_string(),
    })
}

fn set_path(
    tree: &mut serde_json::Value,
    path: &[String],
    value: serde_json::Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty path".into());
    };
    let mut node = tree;
    for (i, key) in parents.iter().enumerate() {
        let obj = node
            .as_object_mut()
            .ok_or_else(|| format!("{} is not a section", parents[..i].join(".")))?;
        node = obj
            .get_mut(key)
            .ok_or_else(|| format!("unknown key {:?}", parents[..=i].join(".")))?;
    }
    let obj = node
        .as_object_mut()
        .ok_or_else(|| format!("{} is not a section", parents.join(".")))?;
    match obj.get_mut(last) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(format!("unknown key {:?}", path.join("."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
        name: String,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        web: Inner,
    }
    impl Validate for Outer {
        fn validate(&self, problems: &mut Vec<String>) {
            if self.web.count == 0 {
                problems.push("web.count: must be at least 1".into());
            }
            if self.web.name.is_empty() {
                problems.push("web.name: must not be empty".into());
            }
        }
    }

    #[test]
    fn parse_error_names_line_and_column() {
        let err = parse_yaml::<Outer>("k.yaml", "web:\n  count: 2\n  nmae: x\n").unwrap_err();
        let ConfigError::Parse { line, message, .. } = &err else {
            panic!("wrong error {err}");
        };
        assert_eq!(*line, 3, "{err}");
        assert!(message.contains("nmae"), "{err}");
        assert!(err.to_string().starts_with("k.yaml:3:"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let v: Outer = parse_yaml("k.yaml", "web: {count: 0, name: ''}").expect("parses");
        let err = v.check("k.yaml").unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("wrong error");
        };
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn validation_problems_name_their_line() {
        let dir = std::env::temp_dir().join(format!("keel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("k.yaml");
        std::fs::write(&file, "# comment\nweb:\n  name: ''\n\n  count: 0\n").expect("write");
        let err = load_yaml::<Outer>(&file).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("wrong error {err}");
        };
        let shown = file.display().to_string();
        assert!(
            problems.contains(&format!("{shown}:5: web.count: must be at least 1")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&format!("{shown}:3: web.name: must not be empty")),
            "{problems:?}"
        );
        let tree: Spanned<Node> =
            serde_saphyr::from_str("a:\n  - x: 1\n  - x: 2\n    y: [1, 2]\nb: 3\n").expect("yaml");
        assert_eq!(line_of(&tree, "a[1].y"), Some(4));
        assert_eq!(line_of(&tree, "a[1].y[0]"), Some(4));
        assert_eq!(line_of(&tree, "a[0].x"), Some(2));
        assert_eq!(line_of(&tree, "a[5].x"), Some(2), "where the list starts");
        assert_eq!(line_of(&tree, "b"), Some(5));
        assert_eq!(line_of(&tree, "c.d"), None);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn env_overrides_set_fields_and_reject_unknown_ones() {
        let base = Outer {
            web: Inner {
                count: 2,
                name: "a".into(),
            },
        };
        let vars = vec![("KEEL_WEB__COUNT".to_string(), "5".to_string())];
        let got = apply_env_overrides(base, vars).expect("applies");
        assert_eq!(got.web.count, 5);
        let bad = vec![("KEEL_WEB__COUNTT".to_string(), "5".to_string())];
        let err = apply_env_overrides(got, bad).unwrap_err();
        assert!(err.to_string().contains("KEEL_WEB__COUNTT"), "{err}");
        assert!(err.to_string().contains("unknown key"), "{err}");
    }
}
