//! What operators load into Prometheus and Grafana (config/prometheus, config/grafana):
//! the scrape config and alert rules are valid (`promtool check config`, `check rules`),
//! the alerts fire when they should on synthetic series (`promtool test rules`), every
//! dashboard query parses as PromQL, and all of them use metrics Segue really exports.

use std::path::Path;
use std::process::Command;

const PROMQL_WORDS: &[&str] = &["max", "sum", "increase", "offset", "and", "or", "rate", "by", "histogram_quantile"];

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

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool").args(args).current_dir(dir).output().expect("promtool (Debian: prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The expressions of a rules file (`expr:` values, folded ones included).
fn rule_exprs(rules: &str) -> String {
    let mut exprs = String::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("expr:") {
            in_expr = true;
            exprs.push_str(rest.trim_start_matches([' ', '>', '-']));
        } else if in_expr && !t.contains(": ") && !t.starts_with('-') && !t.ends_with(':') {
            exprs.push(' ');
            exprs.push_str(t);
        } else {
            in_expr = false;
        }
        exprs.push(' ');
    }
    exprs
}

fn exported_metrics(root: &Path) -> String {
    let mut code = String::new();
    for dir in ["app-api/src", "src", "core/src", "edge/src", "origin/src", "control-plane/src"] {
        sources(&root.join(dir), &mut code);
    }
    code
}

fn assert_exported(code: &str, what: &str, names: Vec<String>) {
    for name in names {
        // Histograms are scraped as NAME_bucket, NAME_sum and NAME_count.
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        assert!(code.contains(&format!("\"{base}\"")), "{what} uses {name}, which no code exports");
    }
}

#[test]
fn alert_rules_and_the_scrape_config_are_valid_fire_when_they_should_and_use_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prometheus = root.join("config/prometheus");
    let rules = prometheus.join("rules");
    let code = exported_metrics(root);
    let mut files: Vec<String> =
        std::fs::read_dir(&rules).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let rule_files: Vec<&String> = files.iter().filter(|f| f.ends_with(".rules.yml")).collect();
    assert!(rule_files.len() >= 3, "{files:?}");
    for f in &rule_files {
        promtool(&rules, &["check", "rules", f]);
        let test = f.replace(".rules.yml", ".test.yml");
        assert!(files.contains(&test), "{f} has no {test} beside it");
        promtool(&rules, &["test", "rules", &test]);
        let used = metric_names(&rule_exprs(&std::fs::read_to_string(rules.join(f)).unwrap()));
        assert!(!used.is_empty(), "{f}");
        assert_exported(&code, f, used);
    }
    // The scrape config reads the edges' admin token from a file promtool wants to see.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(prometheus.join("prometheus.yml")).unwrap();
    let token = dir.path().join("edge-admin.token");
    std::fs::write(&token, "token\n").unwrap();
    let config = config.replace("/etc/segue/edge-admin.token", &token.to_string_lossy());
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::os::unix::fs::symlink(&rules, dir.path().join("rules")).unwrap();
    promtool(dir.path(), &["check", "config", "prometheus.yml"]);
}

#[test]
fn grafana_dashboards_query_valid_promql_over_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = exported_metrics(root);
    let mut names = Vec::new();
    for e in std::fs::read_dir(root.join("config/grafana")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            names.push(p);
        }
    }
    names.sort();
    assert!(names.len() >= 4, "edge, origin, app API and plays dashboards: {names:?}");
    // Each query becomes a recording rule: `promtool check rules` then parses it.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for path in &names {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(d["uid"].is_string() && d["title"].is_string(), "{}", path.display());
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 4, "{}", path.display());
        for (i, panel) in panels.iter().enumerate() {
            let expr = panel["targets"][0]["expr"].as_str().unwrap_or_else(|| panic!("{} panel {i}", path.display()));
            rules
                .push_str(&format!("      - record: dashboard:panel_{i}\n        expr: {}\n", serde_json::json!(expr)));
            assert_exported(&code, &format!("{} panel {:?}", path.display(), panel["title"]), metric_names(expr));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboards.rules.yml"), rules).unwrap();
    promtool(dir.path(), &["check", "rules", "dashboards.rules.yml"]);
}
