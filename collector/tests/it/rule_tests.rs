//! The shipped rules pass their promtool-format tests, and a wrong
//! expectation fails saying what differed.

use std::path::Path;

fn run(path: &Path) -> (usize, Vec<keel_alerting::promtest::Failure>) {
    let text = std::fs::read_to_string(path).expect("read");
    keel_alerting::promtest::run(&path.display().to_string(), &text, false)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_shipped_rules_pass_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/tests");
    let mut checks = 0;
    for entry in std::fs::read_dir(&dir).expect("rules/tests") {
        let path = entry.expect("entry").path();
        let (n, failures) = run(&path);
        let report: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert!(
            failures.is_empty(),
            "{}:\n{}",
            path.display(),
            report.join("\n")
        );
        checks += n;
    }
    assert!(checks >= 17, "only {checks} checks");
    // Every shipped alert is tested.
    let rules = std::fs::read_to_string(dir.join("../shop.yml")).expect("shop.yml");
    let tests = std::fs::read_to_string(dir.join("shop.test.yml")).expect("tests");
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "{line} has no test"
        );
    }
}

#[test]
fn wrong_expectations_fail_and_say_what_differed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules/failing.test.yml");
    let (n, failures) = run(&path);
    assert_eq!(n, 3);
    assert_eq!(failures.len(), 3, "{failures:#?}");
    let text: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(
        text[0].contains("time 15s")
            && text[0].contains("got: []")
            && text[0].contains(r#"job="shop-web""#),
        "still pending at 15s: {}",
        text[0]
    );
    assert!(
        text[1].contains(
            r#"exp: [
        0: Labels:{alertname="ShopTierDown", job="shop-lb""#
        ) && text[1].contains(
            r#"got: [
        0: Labels:{alertname="ShopTierDown", job="shop-web""#
        ),
        "{}",
        text[1]
    );
    assert!(
        text[2].contains("expr \"sum(up)\"") && text[2].contains("got: {} 0"),
        "{}",
        text[2]
    );
}

#[test]
fn log_rules_are_tested_with_input_logs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules/logs.test.yml");
    let (n, failures) = run(&path);
    let report: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{}", report.join("\n"));
    assert_eq!(n, 5);
}
