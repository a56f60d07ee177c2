//! The OpenMetrics output, read back by a Prometheus text parser
//! (`prometheus-parse`) and checked against the rules it does not check:
//! one block per family, `_total` on counter samples, the unit at the end
//! of a name that has one, `# EOF` last.

use std::collections::BTreeMap;
use std::path::Path;

use mpprof_merge::Session;

fn metrics(file: &str) -> (String, prometheus_parse::Scrape) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let s = Session::open(&[p]).expect("session");
    let mut out = Vec::new();
    mpprof_merge::write::openmetrics::write(&s, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus parser reads it");
    (text, scrape)
}

/// The rules of OpenMetrics text the parser is lenient about.
fn check_rules(text: &str) {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    let mut seen = std::collections::HashSet::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(seen.insert(name.to_owned()), "{name} in one block");
            family = Some((name.to_owned(), kind.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap();
            assert!(
                name.ends_with(&format!("_{unit}")),
                "{name} ends in its unit"
            );
        } else if !line.starts_with('#') {
            let (name, kind) = family.as_ref().expect("a sample after its TYPE");
            let metric = line.split(['{', ' ']).next().unwrap();
            let want = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.clone()
            };
            assert_eq!(metric, want, "{line}");
        }
    }
}

#[test]
fn function_figures_of_the_golden_session_parse() {
    let (text, scrape) = metrics("../tests/data/v2.mpb");
    check_rules(&text);
    let calls: BTreeMap<String, f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mpprof_function_calls_total")
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            };
            (s.labels.get("function").unwrap().to_owned(), v)
        })
        .collect();
    assert!(!calls.is_empty(), "{text}");
    // The same figures as the summary.
    let s = Session::open(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/v2.mpb")])
        .unwrap();
    let sum = mpprof_merge::analysis::summary::compute(&s);
    for (k, f) in &sum.processes[0].funcs {
        assert_eq!(calls[&k.label], f.ncalls as f64, "{}", k.label);
    }
}

#[test]
fn resource_figures_parse() {
    let (text, scrape) = metrics("tests/data/resources.mpb");
    check_rules(&text);
    let get = |metric: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            })
            .unwrap_or_else(|| panic!("{metric} in:\n{text}"))
    };
    assert!(get("mpprof_process_cpu_seconds_total", Some(("mode", "user"))) > 0.0);
    assert!(get("mpprof_process_peak_rss_bytes", None) > 1e6);
    assert!(get("mpprof_process_threads", None) >= 1.0);
    assert!(get("mpprof_process_wall_seconds", None) > 0.5);
}
