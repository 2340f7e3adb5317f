//! The Prometheus text exposition format, read into flat samples.
//!
//! Sample lines are split here (name, label block, value, timestamp),
//! quotes respected, and a line that split refuses is read again by
//! `prometheus-parse`. Its own label parsing splits on `,` and `=`
//! without regard to quotes or escapes, so a value such as
//! `path="a,b"` would be cut; the label block is parsed here instead, by
//! the format's rules (`\\`, `\"`, `\n` escapes). Its `Scrape` also folds
//! histogram buckets into one value, but Keel stores them as Prometheus
//! does — one `_bucket` series per `le` — so lines are taken one by one.
//!
//! A target that answers in Prometheus' protobuf format (asked for first
//! when a job scrapes native histograms) is read by [`protobuf`].

use keel_series::histogram::Histogram;
use prometheus_parse::LineInfo;

pub mod nhcb;
pub mod proto;
pub mod protobuf;

/// One sample of a scrape: the labels (with `__name__`), the value, and
/// the timestamp the target gave, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label pairs as exposed, `__name__` first.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Milliseconds since the epoch, when the line carried a timestamp.
    pub timestamp_ms: Option<i64>,
    /// The OpenMetrics exemplar the line carried (`# {trace_id="…"} v [t]`).
    pub exemplar: Option<Exemplar>,
    /// A native histogram (protobuf scrapes only): the sample's value
    /// then is this histogram, and `value` means nothing.
    pub histogram: Option<Box<Histogram>>,
}

/// How a job reads native histograms (Prometheus' scrape options of the
/// same names).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NativeHistograms {
    /// Take a histogram's native buckets when it has them
    /// (`scrape_native_histograms`); otherwise its classic ones.
    pub enabled: bool,
    /// Take the classic buckets too (`always_scrape_classic_histograms`).
    pub always_classic: bool,
    /// Store classic histograms as native histograms with custom
    /// buckets (`convert_classic_histograms_to_nhcb`; see [`nhcb`]).
    pub convert_classic: bool,
    /// At most this many buckets a histogram, resolution halved until it
    /// fits (`native_histogram_bucket_limit`; 0: no limit).
    pub bucket_limit: u32,
    /// Resolution lowered until buckets grow by at least this factor
    /// (`native_histogram_min_bucket_factor`; 0: no limit).
    pub min_bucket_factor: f64,
}

/// An OpenMetrics exemplar: a sample's pointer to one thing it counted
/// (a trace), as a label set with the value it saw and, if given, when.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels (`trace_id`, `span_id`, …).
    pub labels: Vec<(String, String)>,
    /// The value it observed.
    pub value: f64,
    /// Milliseconds since the epoch, if the exemplar said.
    pub timestamp_ms: Option<i64>,
}

/// Which format a body is in: timestamps are integer milliseconds in
/// Prometheus' text and seconds (possibly fractional) in OpenMetrics;
/// the protobuf format is binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text`.
    OpenMetrics,
    /// `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`.
    Protobuf,
}

impl Format {
    /// The format a response's `Content-Type` names (Prometheus' text
    /// when it names none).
    pub fn of_content_type(ct: Option<&str>) -> Self {
        let Some(ct) = ct.map(|c| c.trim_start().to_ascii_lowercase()) else {
            return Self::Prometheus;
        };
        if ct.starts_with("application/openmetrics-text") {
            Self::OpenMetrics
        } else if ct.starts_with("application/vnd.google.protobuf")
            && ct.contains("io.prometheus.client.metricfamily")
            && ct.contains("delimited")
        {
            Self::Protobuf
        } else {
            Self::Prometheus
        }
    }

    /// What a problem's position counts in a body of this format.
    pub fn position(self) -> &'static str {
        match self {
            Self::Protobuf => "byte offset",
            Self::Prometheus | Self::OpenMetrics => "line",
        }
    }

    /// The format's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prometheus => "the Prometheus text format",
            Self::OpenMetrics => "OpenMetrics",
            Self::Protobuf => "the Prometheus protobuf format",
        }
    }

    /// A sample's timestamp in milliseconds.
    fn timestamp_ms(self, t: &str) -> Result<i64, String> {
        match self {
            Self::Prometheus | Self::Protobuf => t
                .parse::<i64>()
                .map_err(|_| format!("timestamp {t:?} is not integer milliseconds")),
            Self::OpenMetrics => seconds_to_ms(t),
        }
    }
}

/// OpenMetrics seconds (`1600000000.123`) as milliseconds.
fn seconds_to_ms(t: &str) -> Result<i64, String> {
    match t.parse::<f64>() {
        Ok(s) if s.is_finite() && s.abs() < 9.0e15 => Ok((s * 1000.0).round() as i64),
        _ => Err(format!("timestamp {t:?} is not seconds since the epoch")),
    }
}

/// A metric family's metadata, from its `# TYPE`, `# HELP` and `# UNIT`
/// lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary`, `untyped`, …
    pub kind: String,
    /// The help text, unescaped.
    pub help: String,
    /// The unit (OpenMetrics' `# UNIT`), or empty.
    pub unit: String,
}

/// Families by name.
pub type Families = std::collections::BTreeMap<String, Family>;

/// The family a series named `name` belongs to, and its name: the
/// family of that name, or the one whose type gives `name` its suffix
/// (`x_bucket` of histogram `x`, `x_total` of OpenMetrics counter `x`).
pub fn family_of<'a>(families: &'a Families, name: &str) -> Option<(&'a str, &'a Family)> {
    if let Some((k, f)) = families.get_key_value(name) {
        return Some((k, f));
    }
    const SUFFIXES: [(&str, &[&str]); 6] = [
        ("_bucket", &["histogram", "gaugehistogram"]),
        ("_count", &["histogram", "summary"]),
        ("_sum", &["histogram", "summary"]),
        ("_total", &["counter"]),
        ("_created", &["counter", "histogram", "summary"]),
        ("_info", &["info"]),
    ];
    SUFFIXES.iter().find_map(|(suffix, kinds)| {
        let base = name.strip_suffix(suffix)?;
        let (k, f) = families.get_key_value(base)?;
        kinds.contains(&f.kind.as_str()).then_some((k.as_str(), f))
    })
}

/// Read a `# HELP`, `# TYPE` or `# UNIT` line into `families`; other
/// comments are passed over.
fn metadata_line(comment: &str, families: &mut Families) {
    let mut parts = comment.trim_start_matches('#').trim_start().splitn(3, ' ');
    let (Some(what), Some(name)) = (parts.next(), parts.next()) else {
        return;
    };
    let rest = parts.next().unwrap_or_default().trim();
    let field = match what {
        "HELP" => |f: &mut Family, v: String| f.help = v,
        "TYPE" => |f: &mut Family, v: String| f.kind = v.to_ascii_lowercase(),
        "UNIT" => |f: &mut Family, v: String| f.unit = v,
        _ => return,
    };
    let value = if what == "HELP" {
        unescape_help(rest)
    } else {
        rest.to_owned()
    };
    field(families.entry(name.to_owned()).or_default(), value);
}

/// A HELP text's escapes (`\\`, `\n`) undone.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// A parsed body: the samples and the lines that could not be read.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every sample read.
    pub samples: Vec<Sample>,
    /// The families' metadata the body states.
    pub families: Families,
    /// How many lines were not understood.
    pub invalid_lines: usize,
    /// The first few of them, with their 1-based line numbers (byte
    /// offsets in a protobuf body) and why.
    pub first_invalid: Vec<(usize, String)>,
}

const KEEP_INVALID: usize = 5;

/// Parse a scraped body in `format`, native histograms read as `native`
/// says (a text body is read as UTF-8, invalid bytes replaced).
pub fn parse_body(body: &[u8], format: Format, native: &NativeHistograms) -> Parsed {
    let mut parsed = match format {
        Format::Protobuf => protobuf::parse(body, native),
        Format::Prometheus | Format::OpenMetrics => {
            parse_as(&String::from_utf8_lossy(body), format)
        }
    };
    if native.convert_classic {
        let samples = std::mem::take(&mut parsed.samples);
        let (samples, problems) = nhcb::convert(samples, &parsed.families, native);
        parsed.samples = samples;
        for why in problems {
            parsed.invalid_lines += 1;
            if parsed.first_invalid.len() < KEEP_INVALID {
                parsed.first_invalid.push((0, why));
            }
        }
    }
    parsed
}

/// Parse a body in Prometheus' text exposition format.
pub fn parse(body: &str) -> Parsed {
    parse_as(body, Format::Prometheus)
}

/// Parse a body in `format`.
pub fn parse_as(body: &str, format: Format) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in body.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            metadata_line(trimmed, &mut out.families);
            continue;
        }
        // Sample lines are split here first, quotes respected: the
        // crate's sample pattern stops a label block at the first `}`
        // (so `/products/{id}` fails it), and its regex was 7 % of the
        // agent's CPU at 10,000 series a scrape. A line this splitter
        // refuses gets the crate's reading as a second opinion.
        let mut exemplar_problem = None;
        let bad = match split_sample(line, format) {
            // OpenMetrics' `_created` lines are each counter's, histogram's
            // and summary's creation time, not a series: Prometheus 3 does
            // not store them.
            Ok((name, ..)) if format == Format::OpenMetrics && is_created(&out.families, name) => {
                continue;
            }
            Ok((name, labels, value, ts, exemplar)) => {
                sample(name, labels, value, ts, format).map(|mut s| {
                    match exemplar.map(parse_exemplar).transpose() {
                        Ok(e) => s.exemplar = e,
                        // The sample is kept; the exemplar is not.
                        Err(why) => exemplar_problem = Some(format!("exemplar dropped: {why}")),
                    }
                    s
                })
            }
            Err(why) => match LineInfo::parse(line) {
                LineInfo::Sample {
                    metric_name,
                    labels,
                    value,
                    timestamp,
                } => sample(metric_name, labels, value, timestamp, format),
                _ => Err(why),
            },
        }
        .map(|s| out.samples.push(s));
        if let Some(why) = bad.err().or(exemplar_problem) {
            out.invalid_lines += 1;
            if out.first_invalid.len() < KEEP_INVALID {
                let line = line.chars().take(80).collect::<String>();
                out.first_invalid.push((i + 1, format!("{why}: {line:?}")));
            }
        }
    }
    out
}

fn sample(
    name: &str,
    labels: Option<&str>,
    value: &str,
    timestamp: Option<&str>,
    format: Format,
) -> Result<Sample, String> {
    let value = parse_value(value).ok_or_else(|| format!("value {value:?} is not a number"))?;
    let timestamp_ms = timestamp.map(|t| format.timestamp_ms(t)).transpose()?;
    let mut pairs = vec![("__name__".to_owned(), name.to_owned())];
    if let Some(l) = labels {
        parse_labels(l, &mut pairs)?;
    }
    Ok(Sample {
        labels: pairs,
        value,
        timestamp_ms,
        exemplar: None,
        histogram: None,
    })
}

/// An exemplar's text after the `#`: `{labels} value [timestamp]`.
fn parse_exemplar(text: &str) -> Result<Exemplar, String> {
    let after = text
        .trim_start()
        .strip_prefix('{')
        .ok_or("an exemplar starts with its label set in braces")?;
    let (block, rest) = label_block(after)?;
    let mut labels = Vec::new();
    parse_labels(block, &mut labels)?;
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("an exemplar has no value")?;
    let value = parse_value(value).ok_or_else(|| format!("value {value:?} is not a number"))?;
    let timestamp_ms = fields.next().map(seconds_to_ms).transpose()?;
    if fields.next().is_some() {
        return Err("more than a value and a timestamp after the exemplar's labels".into());
    }
    Ok(Exemplar {
        labels,
        value,
        timestamp_ms,
    })
}

/// Whether `name` is the `_created` line of a counter, histogram or
/// summary family.
fn is_created(families: &Families, name: &str) -> bool {
    name.strip_suffix("_created")
        .and_then(|base| families.get(base))
        .is_some_and(|f| matches!(f.kind.as_str(), "counter" | "histogram" | "summary"))
}

/// A sample line's parts: name, label block, value, timestamp, and the
/// exemplar's text after its `#`.
type SampleLine<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

/// Split a label block's inside (after `{`) from what follows its `}`,
/// the end found outside quoted values.
fn label_block(after: &str) -> Result<(&str, &str), String> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in after.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Ok((&after[..i], &after[i + 1..])),
            _ => {}
        }
    }
    Err("the label block is not closed".into())
}

/// Split `name{labels} value [timestamp]`, finding the end of the label
/// block outside quoted values.
fn split_sample(line: &str, format: Format) -> Result<SampleLine<'_>, String> {
    let line = line.trim();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("not a sample, comment, HELP or TYPE line".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = None;
    if let Some(after) = rest.strip_prefix('{') {
        let (block, after) = label_block(after)?;
        labels = Some(block);
        rest = after;
    }
    // OpenMetrics: `value [timestamp] # {exemplar labels} value [timestamp]`
    // (Prometheus' text has no exemplars: there a `#` is an error).
    let (rest, exemplar) = match rest.split_once('#') {
        Some((sample, exemplar)) if format == Format::OpenMetrics => (sample, Some(exemplar)),
        _ => (rest, None),
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let ts = fields.next();
    if fields.next().is_some() {
        return Err("more than a value and a timestamp after the labels".into());
    }
    Ok((name, labels, value, ts, exemplar))
}

/// Go's float syntax as exporters write it (`NaN`, `+Inf`, `-Inf`).
fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// `a="x",b="y\"z"` into pairs.
fn parse_labels(block: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut rest = block.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("label {rest:?} has no ="))?;
        let name = rest[..eq].trim();
        if !keel_core::names::is_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let after = rest[eq + 1..].trim_start();
        let mut chars = after.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("the value of label {name:?} is not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => break,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("the value of label {name:?} is not closed"))?;
        out.push((name.to_owned(), value));
        rest = after[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected , after label {name:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_quoted_commas_escapes_buckets_and_timestamps() {
        let body = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"post\",path=\"/a,b=c\",msg=\"say \\\"hi\\\"\\n\"} 1027 1395066363000\n# TYPE d histogram\nd_bucket{route=\"/x\",le=\"0.1\"} 3\nd_bucket{route=\"/x\",le=\"+Inf\"} 5\nd_sum{route=\"/x\"} 0.4\nd_count{route=\"/x\"} 5\nup_like NaN\n";
        let p = parse(body);
        assert_eq!(p.invalid_lines, 0, "{:?}", p.first_invalid);
        assert_eq!(p.samples.len(), 6);
        let first = &p.samples[0];
        assert_eq!(
            first.labels,
            vec![
                ("__name__".into(), "http_requests_total".into()),
                ("method".into(), "post".into()),
                ("path".into(), "/a,b=c".into()),
                ("msg".into(), "say \"hi\"\n".into()),
            ]
        );
        assert_eq!(first.value, 1027.0);
        assert_eq!(first.timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(p.samples[2].labels[2], ("le".into(), "+Inf".into()));
        assert_eq!(p.samples[2].value, 5.0);
        assert!(p.samples[5].value.is_nan());
    }

    #[test]
    fn openmetrics_exemplars_and_second_timestamps_are_read_and_a_bad_exemplar_keeps_its_sample() {
        let body = "# TYPE lat_seconds histogram\n\
            lat_seconds_bucket{le=\"0.1\"} 8 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.05 1600000000.5\n\
            lat_seconds_bucket{le=\"+Inf\",path=\"/a#b\"} 9 1600000001.25 # {trace_id=\"x\"} 3\n\
            lat_seconds_count 9 # {trace_id=\"y\"\n\
            # EOF\n";
        let p = parse_as(body, Format::OpenMetrics);
        assert_eq!(p.samples.len(), 3, "{:?}", p.first_invalid);
        let e = p.samples[0].exemplar.as_ref().expect("exemplar");
        assert_eq!(
            e.labels,
            vec![
                (
                    "trace_id".to_owned(),
                    "4bf92f3577b34da6a3ce929d0e0e4736".to_owned()
                ),
                ("span_id".to_owned(), "00f067aa0ba902b7".to_owned())
            ]
        );
        assert_eq!((e.value, e.timestamp_ms), (0.05, Some(1_600_000_000_500)));
        assert_eq!(p.samples[0].timestamp_ms, None);
        // A `#` inside a label value is no exemplar; seconds as the format says.
        assert_eq!(p.samples[1].labels[2], ("path".into(), "/a#b".into()));
        assert_eq!(p.samples[1].timestamp_ms, Some(1_600_000_001_250));
        let e = p.samples[1].exemplar.as_ref().expect("exemplar");
        assert_eq!((e.value, e.timestamp_ms), (3.0, None));
        // The sample stays, its broken exemplar is named and dropped.
        assert_eq!(
            (p.samples[2].value, p.samples[2].exemplar.is_none()),
            (9.0, true)
        );
        assert_eq!(p.invalid_lines, 1);
        assert_eq!(p.first_invalid[0].0, 4);
        assert!(
            p.first_invalid[0].1.contains("exemplar dropped"),
            "{:?}",
            p.first_invalid
        );
        // Prometheus' text has no exemplars: the line is refused there.
        let text = parse("a 1 # {trace_id=\"x\"} 2\n");
        assert_eq!(
            (text.samples.len(), text.invalid_lines),
            (0, 1),
            "{:?}",
            text.samples
        );
        // OpenMetrics' `_created` lines of a counter are not series.
        let om = parse_as(
            "# TYPE c counter\nc_total 3\nc_created 1600000000.0\n# TYPE g gauge\ng_created 5\n# EOF\n",
            Format::OpenMetrics,
        );
        let names: Vec<&str> = om.samples.iter().map(|s| s.labels[0].1.as_str()).collect();
        assert_eq!(names, ["c_total", "g_created"]);
        // Prometheus' text: integer milliseconds.
        assert_eq!(
            parse("a 5 1600000000500\n").samples[0].timestamp_ms,
            Some(1_600_000_000_500)
        );
        assert_eq!(
            Format::of_content_type(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::of_content_type(Some("text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn garbage_lines_are_counted_and_named_by_line_number() {
        let p = parse(
            "ok 1\n<html>oops</html>\nbad{a=\"x} 2\nv three\nlabel{a=1} 3\nok2 2\nroute{r=\"/p/{id}\",q=\"}\\\"\"} 7 123\n",
        );
        assert_eq!(p.samples.len(), 3);
        assert_eq!(
            p.samples[2].labels[1..],
            [
                ("r".to_owned(), "/p/{id}".to_owned()),
                ("q".to_owned(), "}\"".to_owned())
            ]
        );
        assert_eq!(
            (p.samples[2].value, p.samples[2].timestamp_ms),
            (7.0, Some(123))
        );
        assert_eq!(p.invalid_lines, 4);
        let lines: Vec<usize> = p.first_invalid.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(
            p.first_invalid[2].1.contains("not a number"),
            "{:?}",
            p.first_invalid
        );
    }
}
