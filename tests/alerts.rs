//! The Prometheus alert rules in config/alerts: valid (`promtool check rules`), firing
//! when they should on synthetic series (`promtool test rules`), and written against
//! metrics Segue really exports.

use std::path::Path;
use std::process::Command;

const PROMQL_WORDS: &[&str] = &["max", "sum", "increase", "offset", "and", "or", "rate", "by"];

/// Metric names an expression uses: its identifiers that are not PromQL's own words.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut in_braces_or_brackets = 0;
    for c in expr.chars().chain(std::iter::once(' ')) {
        match c {
            '{' | '[' => in_braces_or_brackets += 1,
            '}' | ']' => in_braces_or_brackets -= 1,
            _ => {}
        }
        if in_braces_or_brackets == 0 && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if word.contains('_')
            && !PROMQL_WORDS.contains(&word.as_str())
            && !word.starts_with(|d: char| d.is_ascii_digit())
        {
            names.push(word.clone());
        }
        word.clear();
    }
    names
}

fn sources(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn alert_rules_are_valid_fire_when_they_should_and_use_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let alerts = root.join("config/alerts");
    for args in [["check", "rules", "plays.rules.yml"], ["test", "rules", "plays.test.yml"]] {
        let out =
            Command::new("promtool").args(args).current_dir(&alerts).output().expect("promtool (Debian: prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(alerts.join("plays.rules.yml")).unwrap();
    let mut exprs = String::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("expr:") {
            in_expr = true;
            exprs.push_str(rest.trim_start_matches([' ', '>', '-']));
        } else if in_expr && !t.contains(':') && !t.starts_with('-') {
            exprs.push(' ');
            exprs.push_str(t);
        } else {
            in_expr = false;
        }
        exprs.push(' ');
    }
    let used = metric_names(&exprs);
    assert!(used.len() >= 4, "{used:?}");
    let mut code = String::new();
    for dir in ["app-api/src", "src", "core/src"] {
        sources(&root.join(dir), &mut code);
    }
    for name in used {
        assert!(code.contains(&format!("\"{name}\"")), "the rules use {name}, which no code exports");
    }
}
