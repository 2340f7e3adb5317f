//! OTLP names as Prometheus names: attribute keys as label names, and a
//! metric's name and unit as a metric name with Prometheus' suffixes.

/// A label name Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("key_{s}");
    } else if s.starts_with('_') && !s.starts_with("__") {
        s = format!("key{s}");
    }
    s
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// `unit` without its annotations in braces (`{request}`), which carry
/// no unit.
fn without_annotations(unit: &str) -> String {
    let mut depth = 0;
    unit.chars()
        .filter(|c| {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    return false;
                }
                _ => {}
            }
            depth == 0 && *c != '{'
        })
        .collect()
}

/// An OTLP (UCUM) unit as Prometheus' metadata states it: `s` →
/// `seconds`, `By/s` → `bytes_per_second`, `1` → `ratio`, an annotation
/// alone → empty.
pub fn unit_name(unit: &str) -> String {
    let unit = without_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (unit.trim(), None),
    };
    let main = match unit_word(main) {
        Some(w) => w.to_owned(),
        None if main == "1" => "ratio".to_owned(),
        None if main.chars().all(|c| c.is_ascii_alphanumeric()) => main.to_owned(),
        None => String::new(),
    };
    match per.and_then(per_word) {
        Some(p) if !main.is_empty() => format!("{main}_per_{p}"),
        _ => main,
    }
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, is_counter: bool, is_gauge: bool) -> String {
    let mut parts: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let unit = without_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
        None => (unit.clone(), None),
    };
    let has = |parts: &[String], w: &str| parts.iter().any(|p| p == w);
    if let Some(w) = unit_word(main.trim()) {
        if !has(&parts, w) {
            parts.push(w.to_owned());
        }
    } else if !main.trim().is_empty()
        && main.trim() != "1"
        && !main.contains(|c: char| !c.is_ascii_alphanumeric())
    {
        parts.push(main.trim().to_owned());
    }
    if let Some(p) = per.as_deref().and_then(|p| per_word(p.trim()))
        && !has(&parts, p)
    {
        parts.push("per".into());
        parts.push(p.into());
    }
    if is_gauge && main.trim() == "1" && !has(&parts, "ratio") {
        parts.push("ratio".into());
    }
    if is_counter {
        parts.retain(|p| p != "total");
        parts.push("total".into());
    }
    let mut s = parts.join("_");
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("_{s}");
    }
    s
}
