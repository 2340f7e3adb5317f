//! Alert label and annotation templates: the part of Go's text/template
//! that Prometheus rule files use.
//!
//! `{{ $labels.instance }}`, `{{ $value }}`, `{{ .Labels.job }}`,
//! `{{ .Value }}`, `{{ $externalLabels.x }}`, string and number
//! literals, pipelines (`{{ $value | humanizePercentage }}`) and calls
//! (`{{ printf "%.2f" $value }}`) with Prometheus' functions: `humanize`,
//! `humanize1024`, `humanizePercentage`, `humanizeDuration`, `printf`,
//! `toUpper`, `toLower`, `title`. `{{-` and `-}}` trim the space beside
//! them. Anything else is a parse error naming it, found when the rule
//! file loads rather than when the alert fires.

use std::collections::BTreeMap;

/// A parsed template, with the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>, String);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One stage of a pipeline: a function with arguments, or a bare term.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    Term(Term),
    Call(Func, Vec<Term>),
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Value,
    Label(String),
    ExternalLabel(String),
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf,
    ToUpper,
    ToLower,
    Title,
}

const FUNCS: [(&str, Func); 8] = [
    ("humanize", Func::Humanize),
    ("humanize1024", Func::Humanize1024),
    ("humanizePercentage", Func::HumanizePercentage),
    ("humanizeDuration", Func::HumanizeDuration),
    ("printf", Func::Printf),
    ("toUpper", Func::ToUpper),
    ("toLower", Func::ToLower),
    ("title", Func::Title),
];

/// What an alert's templates see.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// The alert's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The expression's value.
    pub value: f64,
    /// The collector's external labels.
    pub external: &'a BTreeMap<String, String>,
}

/// A value while a pipeline runs.
#[derive(Debug, Clone)]
enum Val {
    Num(f64),
    Str(String),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Num(n) => keel_promql::format_value(*n),
            Val::Str(s) => s.clone(),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Val::Num(n) => *n,
            Val::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }
}

impl Template {
    /// The text it was written as.
    pub fn source(&self) -> &str {
        &self.1
    }

    /// A template that is only `text`.
    pub fn literal(text: &str) -> Self {
        Self(vec![Part::Text(text.to_owned())], text.to_owned())
    }

    /// Parse `src`; the error names the byte offset and what is wrong.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            let mut inner_start = open + 2;
            if rest[inner_start..].starts_with('-') {
                text = text.trim_end();
                inner_start += 1;
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            let Some(close) = rest[inner_start..].find("}}") else {
                return Err(format!("at byte {}: `{{{{` is not closed", offset + open));
            };
            let mut inner = &rest[inner_start..inner_start + close];
            let mut after = inner_start + close + 2;
            let trim_after =
                inner.ends_with('-') && inner.len() > 1 && inner[..inner.len() - 1].ends_with(' ');
            if trim_after {
                inner = &inner[..inner.len() - 1];
            }
            parts.push(Part::Action(
                pipeline(inner).map_err(|e| format!("at byte {}: {e}", offset + open))?,
            ));
            if trim_after {
                let trimmed = rest[after..].trim_start();
                after = rest.len() - trimmed.len();
            }
            offset += after;
            rest = &rest[after..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts, src.to_owned()))
    }

    /// The text for one alert.
    pub fn render(&self, d: Data<'_>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(cmds) => {
                    let mut piped: Option<Val> = None;
                    for c in cmds {
                        piped = Some(run(c, d, piped.take()));
                    }
                    if let Some(v) = piped {
                        out.push_str(&v.text());
                    }
                }
            }
        }
        out
    }
}

fn term(d: Data<'_>, t: &Term) -> Val {
    match t {
        Term::Value => Val::Num(d.value),
        Term::Label(l) => Val::Str(d.labels.get(l).cloned().unwrap_or_default()),
        Term::ExternalLabel(l) => Val::Str(d.external.get(l).cloned().unwrap_or_default()),
        Term::Str(s) => Val::Str(s.clone()),
        Term::Num(n) => Val::Num(*n),
    }
}

fn run(c: &Command, d: Data<'_>, piped: Option<Val>) -> Val {
    let (f, args) = match c {
        Command::Term(t) => return term(d, t),
        Command::Call(f, args) => (*f, args),
    };
    // A piped value is the call's last argument, as in Go.
    let mut vals: Vec<Val> = args.iter().map(|a| term(d, a)).collect();
    vals.extend(piped);
    let first = vals.first().cloned().unwrap_or(Val::Str(String::new()));
    match f {
        Func::Humanize => Val::Str(humanize(
            first.num(),
            1000.0,
            &["", "k", "M", "G", "T", "P", "E"],
            &["", "m", "u", "n", "p", "f", "a"],
        )),
        Func::Humanize1024 => Val::Str(humanize(
            first.num(),
            1024.0,
            &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei"],
            &[""],
        )),
        Func::HumanizePercentage => Val::Str(format!("{}%", go_g(first.num() * 100.0, 4))),
        Func::HumanizeDuration => Val::Str(humanize_duration(first.num())),
        Func::ToUpper => Val::Str(first.text().to_uppercase()),
        Func::ToLower => Val::Str(first.text().to_lowercase()),
        Func::Title => Val::Str(
            first
                .text()
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map_or(String::new(), |h| h.to_uppercase().chain(c).collect())
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Func::Printf => Val::Str(printf(&first.text(), &vals[1.min(vals.len())..])),
    }
}

/// Go's `%.Ng`: `digits` significant digits, no trailing zeros.
fn go_g(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return keel_promql::format_value(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if exp < -4 || exp >= digits as i32 {
        let s = format!("{:.*e}", digits.saturating_sub(1), v);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let decimals = (digits as i32 - 1 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
fn humanize(v: f64, base: f64, up: &[&str], down: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let mut x = v;
        let mut i = 0;
        while x.abs() >= base && i + 1 < up.len() {
            x /= base;
            i += 1;
        }
        return format!("{}{}", go_g(x, 4), up[i]);
    }
    if down.len() == 1 {
        return go_g(v, 4);
    }
    let mut x = v;
    let mut i = 0;
    while x.abs() < 1.0 && i + 1 < down.len() {
        x *= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(x, 4), down[i])
}

/// Prometheus' `humanizeDuration`: `1d 2h 3m 4s`, or ms/us below a second.
fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v.abs() < 1.0 {
        if v == 0.0 {
            return "0s".into();
        }
        if v.abs() >= 1e-3 {
            return format!("{}ms", go_g(v * 1e3, 4));
        }
        return format!("{}us", go_g(v * 1e6, 4));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let mut s = v.abs();
    let days = (s / 86400.0).floor();
    s -= days * 86400.0;
    let hours = (s / 3600.0).floor();
    s -= hours * 3600.0;
    let minutes = (s / 60.0).floor();
    s -= minutes * 60.0;
    let mut out = Vec::new();
    if days > 0.0 {
        out.push(format!("{days}d"));
    }
    if hours > 0.0 {
        out.push(format!("{hours}h"));
    }
    if minutes > 0.0 {
        out.push(format!("{minutes}m"));
    }
    if s > 0.0 || out.is_empty() {
        out.push(format!("{}s", go_g(s, 4)));
    }
    format!("{sign}{}", out.join(" "))
}

/// Go's `printf` for the verbs alert templates use: `%s %v %d %f %.Nf %g %e %q %%`.
fn printf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(*d);
                chars.next();
            }
            precision = p.parse().ok();
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        match verb {
            'd' => out.push_str(&format!("{}", a.num().trunc() as i64)),
            'f' => out.push_str(&format!("{:.*}", precision.unwrap_or(6), a.num())),
            'e' => out.push_str(&format!("{:.*e}", precision.unwrap_or(6), a.num())),
            'g' => out.push_str(&go_g(a.num(), precision.unwrap_or(17).max(1))),
            'q' => out.push_str(&format!("{:?}", a.text())),
            _ => out.push_str(&a.text()),
        }
    }
    out
}

/// Split an action into its pipeline commands.
fn pipeline(src: &str) -> Result<Vec<Command>, String> {
    let tokens = tokens(src)?;
    if tokens.is_empty() {
        return Err("an empty action".into());
    }
    let mut cmds = Vec::new();
    for stage in tokens.split(|t| t == "|") {
        let Some((head, args)) = stage.split_first() else {
            return Err("an empty stage in a pipeline".into());
        };
        match FUNCS.iter().find(|(n, _)| n == head) {
            Some((_, f)) => {
                let args = args
                    .iter()
                    .map(|a| parse_term(a))
                    .collect::<Result<_, _>>()?;
                cmds.push(Command::Call(*f, args));
            }
            None => {
                if !args.is_empty() {
                    return Err(format!(
                        "{head:?} is not a function Keel knows ({})",
                        FUNCS.map(|(n, _)| n).join(", ")
                    ));
                }
                cmds.push(Command::Term(parse_term(head)?));
            }
        }
    }
    if cmds.len() > 1 && cmds[1..].iter().any(|c| matches!(c, Command::Term(_))) {
        return Err("only a function can follow `|`".into());
    }
    Ok(cmds)
}

fn parse_term(t: &str) -> Result<Term, String> {
    if let Some(s) = t.strip_prefix('"') {
        return Ok(Term::Str(unquote(s)?));
    }
    if let Some(s) = t.strip_prefix('`') {
        return Ok(Term::Str(s.trim_end_matches('`').to_owned()));
    }
    if matches!(t, "$value" | ".Value") {
        return Ok(Term::Value);
    }
    for prefix in ["$labels.", ".Labels."] {
        if let Some(l) = t.strip_prefix(prefix) {
            return Ok(Term::Label(l.to_owned()));
        }
    }
    if let Some(l) = t.strip_prefix("$externalLabels.") {
        return Ok(Term::ExternalLabel(l.to_owned()));
    }
    if let Ok(n) = t.parse::<f64>() {
        return Ok(Term::Num(n));
    }
    Err(format!(
        "{t:?} is not something a template can use ($labels.NAME, $value, a string, a number, or {})",
        FUNCS.map(|(n, _)| n).join(", ")
    ))
}

fn unquote(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => break,
            },
            o => out.push(o),
        }
    }
    Err("a string is not closed".into())
}

/// Whitespace-separated tokens, quoted strings and `|` kept whole.
fn tokens(src: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = src.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            out.push("|".to_owned());
        } else if c == '"' || c == '`' {
            let mut t = String::from(c);
            chars.next();
            let mut closed = false;
            while let Some(x) = chars.next() {
                t.push(x);
                if x == '\\' && c == '"' {
                    if let Some(y) = chars.next() {
                        t.push(y);
                    }
                } else if x == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err("a string is not closed".into());
            }
            out.push(t);
        } else {
            let mut t = String::new();
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() || x == '|' {
                    break;
                }
                t.push(x);
                chars.next();
            }
            out.push(t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> = [("instance", "web-1:80"), ("job", "shop")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let external = BTreeMap::from([("cluster".to_owned(), "eu".to_owned())]);
        Template::parse(src).expect("parses").render(Data {
            labels: &labels,
            value,
            external: &external,
        })
    }

    #[test]
    fn prometheus_templates_render_as_prometheus_does() {
        assert_eq!(
            render("{{ $labels.instance }} of {{ .Labels.job }} is down", 0.0),
            "web-1:80 of shop is down"
        );
        assert_eq!(render("{{ $value }}", 0.25), "0.25");
        assert_eq!(
            render("{{ $value | humanizePercentage }}", 0.0512345),
            "5.123%"
        );
        assert_eq!(render("{{ humanize $value }}", 1_234_567.0), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.0042), "4.2m");
        assert_eq!(render("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 93784.0),
            "1d 2h 3m 4s"
        );
        assert_eq!(render("{{ humanizeDuration 0.25 }}", 0.0), "250ms");
        assert_eq!(render(r#"{{ printf "%.2f%%" $value }}"#, 12.3456), "12.35%");
        assert_eq!(
            render(r#"{{ printf "%s has %d" $labels.job $value }}"#, 7.9),
            "shop has 7"
        );
        assert_eq!(
            render("{{ $labels.missing }}|{{ $externalLabels.cluster }}", 0.0),
            "|eu"
        );
        assert_eq!(render("a  {{- $labels.job -}}  b", 0.0), "ashopb");
        assert_eq!(render("{{ $labels.job | toUpper }}", 0.0), "SHOP");
        assert_eq!(render("no actions", 1.0), "no actions");
    }

    #[test]
    fn bad_templates_are_errors_naming_the_place() {
        let e = Template::parse("ok {{ $value").unwrap_err();
        assert!(e.contains("byte 3") && e.contains("not closed"), "{e}");
        let e = Template::parse("{{ $vlaue }}").unwrap_err();
        assert!(e.contains("$vlaue"), "{e}");
        let e = Template::parse("{{ $value | nosuch }}").unwrap_err();
        assert!(e.contains("nosuch"), "{e}");
        assert!(Template::parse("{{ }}").is_err());
        assert!(Template::parse(r#"{{ printf "x }}"#).is_err());
    }
}
