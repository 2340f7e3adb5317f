//! The incident bundle: one file holding a recorded window — its metric
//! samples, logs and spans, the alert, notification, scaling and failover
//! events that happened, the marks (batch arrivals, rule and controller
//! ticks), and the rules, dashboards and policies in force.
//!
//! Layout (documented for users in `docs/INCIDENTS.md`): a first line in
//! plain text, `keel-incident <version>\n`, then one zstd frame (with its
//! content checksum) of JSON lines: a `header` object, one object per item
//! (`series`, `log`, `span`, `mark`, `event`, `alert`, `page`, `file`,
//! `config`), and an `end` object counting the items. A file without the
//! `end` line is truncated and refused; nothing of it is replayed.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use keel_logindex::logs::record::LogRecord;
use keel_logindex::traces::SpanRecord;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first word of every bundle.
pub const MAGIC: &str = "keel-incident";
/// The file name extension bundles get.
pub const EXTENSION: &str = "keelinc";

/// What the bundle is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Its name (`[A-Za-z0-9._-]`, used as its file name).
    pub name: String,
    /// The window's start (ms).
    pub from_ms: i64,
    /// The window's end (ms).
    pub to_ms: i64,
    /// When it was written (ms).
    pub recorded_at_ms: i64,
    /// Why: `manual`, `dashboard`, or `p0 <alertname>`.
    pub reason: String,
    /// Only this service's (`job`) data, if set.
    #[serde(default)]
    pub service: Option<String>,
    /// When the incident began (ms): the P0 an automatic bundle was
    /// recorded for, or what the recording named; none: the window's start.
    #[serde(default)]
    pub incident_ms: Option<i64>,
    /// Samples and marks from this long before `from_ms` are included,
    /// for replay to evaluate through first (unreported).
    #[serde(default)]
    pub lead_in_ms: i64,
    /// Only the log records this search matched were kept (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_query: Option<String>,
    /// Spans were left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_spans: bool,
    /// The Keel that wrote it.
    pub keel_version: String,
}

/// One series' samples in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Its labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// Its samples, oldest first.
    #[serde(with = "samples")]
    pub samples: Vec<(i64, f64)>,
}

/// An alert's change of state, as the rules recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertChange {
    /// When (ms): the evaluation that saw it.
    pub at_ms: i64,
    /// The rule.
    pub rule: String,
    /// Its group.
    pub group: String,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// P0, P1 or P2.
    pub severity: String,
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub from: String,
    /// The state it went to.
    pub to: String,
}

/// A file in force: a rule file or a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// `rules` or `dashboard`.
    pub kind: String,
    /// Its name (rule files: as configured; dashboards: file name).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// The configuration in force (secrets removed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The collector's `rules` section.
    pub rules: serde_json::Value,
    /// The collector's `notify` section (password and webhook URLs removed).
    pub notify: serde_json::Value,
    /// The `controller` section, when a controller ran.
    #[serde(default)]
    pub controller: Option<serde_json::Value>,
}

/// A whole bundle in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// What it is about.
    pub header: Header,
    /// The configuration in force.
    pub config: Config,
    /// Rule files and dashboards.
    pub files: Vec<File>,
    /// Metric samples.
    pub series: Vec<Series>,
    /// Log records.
    pub logs: Vec<LogRecord>,
    /// Spans.
    pub spans: Vec<SpanRecord>,
    /// Arrivals and ticks, oldest first.
    pub marks: Vec<keel_core::marks::Mark>,
    /// The controller's events (scaling, failover), as it recorded them.
    pub events: Vec<serde_json::Value>,
    /// Alert state changes.
    pub alerts: Vec<AlertChange>,
    /// Pages and tickets decided (each once, whatever its receivers).
    pub pages: Vec<keel_alerting::notify::Page>,
}

/// What to read of a bundle: everything by default.
pub struct Keep {
    /// Spans.
    pub spans: bool,
    /// Logs: asked once, at the first log record, with what was read so
    /// far (header, config and files).
    pub logs: Box<dyn Fn(&Bundle) -> bool>,
}

impl Default for Keep {
    fn default() -> Self {
        Self {
            spans: true,
            logs: Box::new(|_| true),
        }
    }
}

/// One line of the stream.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Item {
    Header(Header),
    Config(Config),
    File(File),
    Series(Series),
    Log(LogRecord),
    Span(SpanRecord),
    Mark(keel_core::marks::Mark),
    Event(serde_json::Value),
    Alert(AlertChange),
    Page(keel_alerting::notify::Page),
    End { items: u64 },
}

/// Why a bundle cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a bundle at all.
    #[error("{path}: not a Keel incident bundle (it does not start with \"{MAGIC} <version>\")")]
    NotABundle {
        /// The file.
        path: String,
    },
    /// Written by a Keel whose format this one does not read.
    #[error(
        "{path}: incident bundle format version {found}; this keel reads version {FORMAT_VERSION} (replay it with the keel that recorded it)"
    )]
    Version {
        /// The file.
        path: String,
        /// The version it has.
        found: String,
    },
    /// Damaged: the compressed stream or an item does not decode.
    #[error("{path}: corrupt at item {item} (line {line} of the decompressed stream): {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// Items read before the damage.
        item: u64,
        /// The decompressed line.
        line: u64,
        /// What failed.
        why: String,
    },
    /// Cut short: no `end` line.
    #[error(
        "{path}: truncated after {items} items (no end record); the bundle is incomplete and is not replayed"
    )]
    Truncated {
        /// The file.
        path: String,
        /// Items read.
        items: u64,
    },
    /// Something the replay needs is missing from it.
    #[error("{path}: {why}")]
    Missing {
        /// The file.
        path: String,
        /// What.
        why: String,
    },
}

impl Bundle {
    /// When the incident began: the time it names, else the window's start.
    pub fn start_ms(&self) -> i64 {
        self.header.incident_ms.unwrap_or(self.header.from_ms)
    }

    /// Write the bundle to `path` (through a temporary file renamed into
    /// place, so a crash never leaves half a bundle under its name).
    /// Returns the bytes written.
    pub fn write(&self, path: &Path) -> Result<u64, BundleError> {
        let err = |source| BundleError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("partial");
        let file = std::fs::File::create(&tmp).map_err(err)?;
        let mut out = std::io::BufWriter::new(file);
        self.write_to(&mut out).map_err(err)?;
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(len)
    }

    /// The bundle's bytes into `out`.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "{MAGIC} {FORMAT_VERSION}")?;
        let mut z = zstd::stream::Encoder::new(out, 9)?;
        z.include_checksum(true)?;
        let mut n = 0u64;
        let mut put = |z: &mut zstd::stream::Encoder<'_, _>, item: &Item| -> std::io::Result<()> {
            serde_json::to_writer(&mut *z, item)?;
            z.write_all(b"\n")?;
            n += 1;
            Ok(())
        };
        put(&mut z, &Item::Header(self.header.clone()))?;
        put(&mut z, &Item::Config(self.config.clone()))?;
        for f in &self.files {
            put(&mut z, &Item::File(f.clone()))?;
        }
        for s in &self.series {
            put(&mut z, &Item::Series(s.clone()))?;
        }
        for l in &self.logs {
            put(&mut z, &Item::Log(l.clone()))?;
        }
        for s in &self.spans {
            put(&mut z, &Item::Span(s.clone()))?;
        }
        for m in &self.marks {
            put(&mut z, &Item::Mark(m.clone()))?;
        }
        for e in &self.events {
            put(&mut z, &Item::Event(e.clone()))?;
        }
        for a in &self.alerts {
            put(&mut z, &Item::Alert(a.clone()))?;
        }
        for p in &self.pages {
            put(&mut z, &Item::Page(p.clone()))?;
        }
        let items = n;
        serde_json::to_writer(&mut z, &Item::End { items })?;
        z.write_all(b"\n")?;
        z.finish()?.flush()
    }

    /// Read a bundle file.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        Self::read_only(path, &Keep::default())
    }

    /// Read a bundle file, leaving out what `keep` does not want (the
    /// stream is still read and checked whole).
    pub fn read_only(path: &Path, keep: &Keep) -> Result<Self, BundleError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| BundleError::Io {
            path: name.clone(),
            source,
        })?;
        Self::read_from_only(std::io::BufReader::new(file), &name, keep)
    }

    /// Read a bundle from `input`; `name` names it in errors.
    pub fn read_from(input: impl BufRead, name: &str) -> Result<Self, BundleError> {
        Self::read_from_only(input, name, &Keep::default())
    }

    /// As [`Self::read_from`], leaving out what `keep` does not want.
    pub fn read_from_only(
        input: impl BufRead,
        name: &str,
        keep: &Keep,
    ) -> Result<Self, BundleError> {
        let path = name.to_owned();
        let mut lines = decompressed(input, &path)?;
        let mut header = None;
        let mut b = Bundle {
            header: Header {
                name: String::new(),
                from_ms: 0,
                to_ms: 0,
                recorded_at_ms: 0,
                reason: String::new(),
                service: None,
                incident_ms: None,
                lead_in_ms: 0,
                logs_query: None,
                no_spans: false,
                keel_version: String::new(),
            },
            config: Config::default(),
            files: Vec::new(),
            series: Vec::new(),
            logs: Vec::new(),
            spans: Vec::new(),
            marks: Vec::new(),
            events: Vec::new(),
            alerts: Vec::new(),
            pages: Vec::new(),
        };
        let mut items = 0u64;
        let mut line = Vec::new();
        // Decided at the first log record, once the files are read.
        let mut keep_logs: Option<bool> = None;
        loop {
            line.clear();
            let corrupt = |why: String| BundleError::Corrupt {
                path: path.clone(),
                item: items,
                line: items + 1,
                why,
            };
            let n = lines
                .read_until(b'\n', &mut line)
                .map_err(|e| corrupt(e.to_string()))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(BundleError::Truncated { path, items });
            }
            // Items left out are counted, not parsed (the frame's
            // checksum still covers their bytes).
            let skip = (line.starts_with(b"{\"span\":") && !keep.spans)
                || (line.starts_with(b"{\"log\":")
                    && !*keep_logs.get_or_insert_with(|| (keep.logs)(&b)));
            if skip {
                items += 1;
                continue;
            }
            let item: Item = serde_json::from_slice(&line).map_err(|e| corrupt(e.to_string()))?;
            match item {
                Item::Header(h) if items == 0 => {
                    b.header = h.clone();
                    header = Some(h);
                }
                _ if items == 0 => return Err(corrupt("the first item is not the header".into())),
                Item::Header(_) => return Err(corrupt("a second header".into())),
                Item::Config(c) => b.config = c,
                Item::File(f) => b.files.push(f),
                Item::Series(s) => b.series.push(s),
                Item::Log(l) => b.logs.push(l),
                Item::Span(s) => b.spans.push(s),
                Item::Mark(m) => b.marks.push(m),
                Item::Event(e) => b.events.push(e),
                Item::Alert(a) => b.alerts.push(a),
                Item::Page(p) => b.pages.push(p),
                Item::End { items: counted } => {
                    if counted != items {
                        return Err(corrupt(format!(
                            "the end record counts {counted} items, the stream holds {items}"
                        )));
                    }
                    // The frame's checksum is verified at its end.
                    let mut rest = Vec::new();
                    std::io::Read::read_to_end(&mut lines, &mut rest)
                        .map_err(|e| corrupt(e.to_string()))?;
                    if !rest.is_empty() {
                        return Err(corrupt("data after the end record".into()));
                    }
                    break;
                }
            }
            items += 1;
        }
        b.header = header.ok_or(BundleError::Truncated {
            path: path.clone(),
            items,
        })?;
        let h = &b.header;
        const LAST_MS: i64 = 253_402_300_799_999;
        if !(0..=LAST_MS).contains(&h.from_ms)
            || !(0..=LAST_MS).contains(&h.to_ms)
            || h.to_ms <= h.from_ms
            || h.to_ms - h.from_ms > 31 * 86_400_000
            || h.incident_ms.is_some_and(|t| !(0..=LAST_MS).contains(&t))
            || !(0..=86_400_000).contains(&h.lead_in_ms)
            || h.lead_in_ms > h.from_ms
        {
            return Err(BundleError::Corrupt {
                path,
                item: 0,
                line: 1,
                why: format!(
                    "header: the window {}..{} ms is not a window of at most 31 days between 1970 and 9999",
                    h.from_ms, h.to_ms
                ),
            });
        }
        Ok(b)
    }

    /// The raw data it holds: 16 bytes a sample (time and value) plus
    /// the JSON of every log record and span.
    pub fn raw_bytes(&self) -> u64 {
        let json = |v: serde_json::Result<Vec<u8>>| v.map_or(0, |v| v.len() as u64);
        self.series
            .iter()
            .map(|s| 16 * s.samples.len() as u64)
            .sum::<u64>()
            + self
                .logs
                .iter()
                .map(|l| json(serde_json::to_vec(l)))
                .sum::<u64>()
            + self
                .spans
                .iter()
                .map(|s| json(serde_json::to_vec(s)))
                .sum::<u64>()
    }

    /// A log index of its records (in `dir`), searchable by their own
    /// time: what log rules and log panels read over a bundle.
    pub fn log_index(&self, dir: &Path) -> Result<keel_logindex::logs::LogStore, String> {
        let start = self.header.from_ms - self.header.lead_in_ms;
        let logs = keel_logindex::logs::LogStore::open(
            dir,
            keel_logindex::index_store::IndexConfig {
                write_ahead: false,
                partition_ms: (self.header.to_ms - start + 1).max(60_000) * 2,
                retention_ms: i64::MAX / 4,
                ..Default::default()
            },
            start,
        )
        .map_err(|e| e.to_string())?;
        logs.append(self.logs.clone(), start)
            .map_err(|e| e.to_string())?;
        logs.commit().map_err(|e| e.to_string())?;
        Ok(logs)
    }

    /// The rule files it holds.
    pub fn rule_files(&self) -> impl Iterator<Item = &File> {
        self.files.iter().filter(|f| f.kind == "rules")
    }
}

/// Read only a bundle's header (for listing).
pub fn read_header(path: &Path) -> Result<Header, BundleError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| BundleError::Io {
        path: name.clone(),
        source,
    })?;
    let mut line = Vec::new();
    decompressed(std::io::BufReader::new(file), &name)?
        .take(1 << 20)
        .read_until(b'\n', &mut line)
        .map_err(|e| BundleError::Corrupt {
            path: name.clone(),
            item: 0,
            line: 1,
            why: e.to_string(),
        })?;
    match serde_json::from_slice::<Item>(&line) {
        Ok(Item::Header(h)) => Ok(h),
        _ => Err(BundleError::Corrupt {
            path: name,
            item: 0,
            line: 1,
            why: "the first item is not the header".into(),
        }),
    }
}

/// The bundle's items as decompressed lines, once its plain first line
/// (the magic word and this build's version) checks out.
fn decompressed<R: BufRead>(
    mut input: R,
    path: &str,
) -> Result<std::io::BufReader<zstd::stream::Decoder<'static, R>>, BundleError> {
    let mut first = Vec::new();
    input
        .by_ref()
        .take(64)
        .read_until(b'\n', &mut first)
        .map_err(|source| BundleError::Io {
            path: path.into(),
            source,
        })?;
    check_first_line(&first, path)?;
    let z = zstd::stream::Decoder::with_buffer(input).map_err(|e| BundleError::Corrupt {
        path: path.into(),
        item: 0,
        line: 1,
        why: e.to_string(),
    })?;
    Ok(std::io::BufReader::new(z))
}

/// Check the plain first line: the magic word and this build's version.
fn check_first_line(first: &[u8], path: &str) -> Result<(), BundleError> {
    let first = String::from_utf8_lossy(first);
    let Some(version) = first
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix(MAGIC))
        .and_then(|l| l.strip_prefix(' '))
    else {
        return Err(BundleError::NotABundle { path: path.into() });
    };
    if version != FORMAT_VERSION.to_string() {
        return Err(BundleError::Version {
            path: path.into(),
            found: version.to_owned(),
        });
    }
    Ok(())
}

/// Samples as two arrays: times as differences from the previous one
/// (the first from 0), values as JSON numbers, or `"NaN"`, `"+Inf"`,
/// `"-Inf"`, `"stale"` (Prometheus' staleness marker) where JSON has none.
mod samples {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f64),
        Word(String),
    }

    #[derive(Serialize, Deserialize)]
    struct Columns {
        t: Vec<i64>,
        v: Vec<Value>,
    }

    pub fn serialize<S: Serializer>(s: &[(i64, f64)], ser: S) -> Result<S::Ok, S::Error> {
        let mut prev = 0i64;
        let t = s
            .iter()
            .map(|(t, _)| {
                let d = t - prev;
                prev = *t;
                d
            })
            .collect();
        let v = s
            .iter()
            .map(|(_, v)| match *v {
                v if keel_core::stale::is_stale(v) => Value::Word("stale".into()),
                v if v.is_nan() => Value::Word("NaN".into()),
                v if v == f64::INFINITY => Value::Word("+Inf".into()),
                v if v == f64::NEG_INFINITY => Value::Word("-Inf".into()),
                v => Value::Number(v),
            })
            .collect();
        Columns { t, v }.serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<(i64, f64)>, D::Error> {
        let c = Columns::deserialize(de)?;
        if c.t.len() != c.v.len() {
            return Err(D::Error::custom(format!(
                "{} times but {} values",
                c.t.len(),
                c.v.len()
            )));
        }
        let mut t = 0i64;
        c.t.into_iter()
            .zip(c.v)
            .map(|(d, v)| {
                t = t
                    .checked_add(d)
                    .ok_or_else(|| D::Error::custom("a time overflows"))?;
                let v = match v {
                    Value::Number(x) => x,
                    Value::Word(w) => match w.as_str() {
                        "stale" => keel_core::stale::marker(),
                        "NaN" => f64::NAN,
                        "+Inf" => f64::INFINITY,
                        "-Inf" => f64::NEG_INFINITY,
                        other => return Err(D::Error::custom(format!("bad value {other:?}"))),
                    },
                };
                Ok((t, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
