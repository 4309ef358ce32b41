//! The dashboard and the alert rules only use metrics that exist: every metric name in the
//! Grafana dashboard's queries and in `monitoring/alerts.yml` is in the services' `/metrics`
//! scraped once right after start-up, before any traffic. A fresh all-in-one process, so no
//! other test's traffic can have created a series; a rule on a series that appears only after
//! the first mail would silently never fire ("no data" is not zero).

use std::collections::BTreeSet;

use yaml_rust2::YamlLoader;

use crate::runner::Runner;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/monitoring/grafana/dashboards/signup.json"
);
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring/alerts.yml");

/// Series Prometheus itself adds to every scrape, not exposed by a service.
const SCRAPE_SERIES: &[&str] = &["up"];

/// Aggregation operators, set operators and other words of PromQL that are not metric names
/// when they are not followed by `(` (`sum by (le) (…)`, `a and b`, `x offset 5m`).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names, not of expressions.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects: identifiers that are not functions (followed
/// by `(`), keywords, label names (inside `{…}` or after `by`/`on`/… ) or literals; ranges and
/// subqueries (`[…]`), strings and Grafana variables (`$__rate_interval`) are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_balanced(&chars, i, '{', '}'),
            '[' => i = skip_balanced(&chars, i, '[', ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_balanced(&chars, i, '{', '}');
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number or a duration (`0.5`, `1e3`, `5m`).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let before_paren = chars.get(next) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) && before_paren {
                    i = skip_balanced(&chars, next, '(', ')');
                } else if !before_paren && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the string literal starting at `start` (backslash escapes honoured).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the `close` matching the `open` at `start` (strings inside skipped).
fn skip_balanced(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Every `expr` of the dashboard, at any depth (panels, rows' panels, targets).
fn dashboard_exprs() -> Vec<String> {
    fn walk(value: &serde_json::Value, exprs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) => {
                for (key, value) in fields {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => exprs.push(expr.clone()),
                        _ => walk(value, exprs),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    walk(&dashboard, &mut exprs);
    exprs
}

/// Every rule's `expr` in alerts.yml, and the names its recording rules define (those are not
/// scraped).
fn rule_exprs() -> (Vec<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(ALERTS).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
            if let Some(name) = rule["record"].as_str() {
                recorded.insert(name.to_owned());
            }
        }
    }
    (exprs, recorded)
}

/// The sample names of a Prometheus text exposition (`# HELP`/`# TYPE` lines are not samples).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exposed_from_start_up() {
    let (rules, recorded) = rule_exprs();
    let dashboard = dashboard_exprs();
    assert!(rules.len() >= 10, "{rules:?}");
    assert!(dashboard.len() >= 20, "{dashboard:?}");
    let mut used = BTreeSet::new();
    for expr in rules.iter().chain(&dashboard) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric found in {expr}");
        used.extend(names);
    }
    used.retain(|name| !recorded.contains(name) && !SCRAPE_SERIES.contains(&name.as_str()));

    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), "info", None).await;
    // One scrape per service, before any request or event. The runner hosts the four in one
    // process with one registry, so each endpoint shows the union; docker compose runs them
    // apart, and Prometheus sees the same union across its four jobs.
    let mut exposed = BTreeSet::new();
    for url in &runner.metrics_urls {
        let (status, body) = common::testing::http_get(url).await;
        assert_eq!(status, 200, "{url}: {body}");
        exposed.extend(exposed_names(&body));
    }
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "used by monitoring/ but not in /metrics at start-up: {missing:?}\nexposed: {exposed:#?}"
    );
    println!(
        "{} metric names used by the dashboard and alert rules, all exposed at start-up",
        used.len()
    );
}

#[test]
fn metric_names_skips_functions_keywords_labels_and_ranges() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"sum by (method, outcome) (rate(verifications_total{outcome!~"verified|x"}[$__rate_interval])) * 60"#,
            &["verifications_total"],
        ),
        (
            "histogram_quantile(0.99, sum by (le, kind) (rate(webhook_attempt_duration_seconds_bucket[5m])))",
            &["webhook_attempt_duration_seconds_bucket"],
        ),
        (
            "max(outbox_relay_backlog) > 0\nand\nsum(increase(outbox_relay_published_total[10m])) == 0",
            &["outbox_relay_backlog", "outbox_relay_published_total"],
        ),
        (
            "rate(a[5m] offset 1h) / on(job) group_left(instance) b:recorded:rate5m",
            &["a", "b:recorded:rate5m"],
        ),
        ("sum(x) without (instance) > bool 1e3 * inf", &["x"]),
        (r#"up{job="a b"} == 0"#, &["up"]),
        ("max_over_time(y[1h:5m]) < .5 unless z", &["y", "z"]),
    ];
    for (expr, expected) in cases {
        assert_eq!(metric_names(expr), *expected, "{expr}");
    }
}

#[test]
fn exposed_names_reads_samples_only() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 0\nb{x=\"1\"} 2\nh_bucket{le=\"0.5\"} 0\n\n";
    let names: Vec<String> = exposed_names(text).into_iter().collect();
    assert_eq!(names, ["a_total", "b", "h_bucket"]);
}
