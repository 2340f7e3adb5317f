//! Floats as Prometheus prints them: in its API answers (Go's
//! `FormatFloat(f, 'f', -1)`), in its messages (`%g`), and in the `le`
//! and `quantile` labels it writes from a protobuf scrape (OpenMetrics'
//! form: `%g` with `.0` on a whole number).

/// A float as Prometheus prints it (`strconv.FormatFloat(f, 'f', -1, 64)`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A float as Prometheus' query API writes it (`jsonutil.MarshalFloat`):
/// as [`format_value`], but with an exponent when its magnitude is below
/// 1e-6 or at least 1e21 (`1e-07`, `2.938735877055719e-39`).
pub fn format_api(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 || (1e-6..1e21).contains(&a) {
        return format_value(v);
    }
    let (mantissa, exp) = shortest_exponent(v);
    go_exponent(&mantissa, exp)
}

/// A finite float's shortest mantissa digits and its decimal exponent.
fn shortest_exponent(v: f64) -> (String, i32) {
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    (mantissa.to_owned(), exp.parse().unwrap_or(0))
}

/// Go's exponent form: `1.5e+06`, `1e-05` (a sign and two digits at least).
fn go_exponent(mantissa: &str, exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// A float as Go's `%g`/`%v` prints it (shortest digits; an exponent
/// when it is below -4 or at least 6: `1.5`, `2`, `1e+06`, `1e-05`), the
/// form of the numbers in Prometheus' messages.
pub fn format_go_g(v: f64) -> String {
    if !v.is_finite() {
        return format_value(v);
    }
    let (mantissa, exp) = shortest_exponent(v);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    go_exponent(&mantissa, exp)
}

/// A float as Prometheus writes an `le` or `quantile` label read from a
/// protobuf scrape (`formatOpenMetricsFloat`): Go's `%g`, with `.0`
/// after a whole number (`1.0`, `0.25`, `1e+06`, `+Inf`).
pub fn format_openmetrics(v: f64) -> String {
    let s = format_go_g(v);
    if !v.is_finite() || s.contains(['.', 'e', 'E']) {
        s
    } else {
        s + ".0"
    }
}

#[cfg(test)]
mod tests {
    use super::{format_api, format_go_g, format_openmetrics};

    #[test]
    fn numbers_print_as_go_prints_them() {
        for (v, want) in [
            (1.5, "1.5"),
            (2.0, "2"),
            (-1.0, "-1"),
            (1e20, "1e+20"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(format_go_g(v), want, "{v}");
        }
    }

    #[test]
    fn api_values_print_as_prometheus_api_prints_them() {
        for (v, want) in [
            (1.5, "1.5"),
            (0.000001, "0.000001"),
            (1e-7, "1e-07"),
            (-2.938735877055719e-39, "-2.938735877055719e-39"),
            (123456789.0, "123456789"),
            (1e21, "1e+21"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_api(v), want, "{v}");
        }
    }

    #[test]
    fn labels_print_as_openmetrics_prints_them() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (0.25, "0.25"),
            (-2.0, "-2.0"),
            (1e6, "1e+06"),
            (123456.0, "123456.0"),
            (0.00001, "1e-05"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_openmetrics(v), want, "{v}");
        }
    }
}
