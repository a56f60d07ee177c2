//! The worker-pool demo, end to end: run the example, then check the merged
//! trace and summary as a user would read them.

mod common;

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Checks the Chrome JSON invariants Perfetto's importer relies on and
/// returns the events. Slices nest (B/E balanced per thread, never an E
/// without B), every flow has exactly one `s` and one `f` with the same
/// (cat, name, id), and each binds to a slice: `s` inside an open slice,
/// `f` with `bp: "e"` inside an open slice.
pub fn check_chrome(json: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(json).expect("valid JSON");
    let evs = v["traceEvents"].as_array().expect("traceEvents").clone();
    // Open slices per thread, by name: every `E` closes the `B` of its name
    // (speedscope and the Firefox Profiler match them by name).
    let mut open: HashMap<(u64, u64), Vec<(String, String)>> = HashMap::new();
    let mut starts = HashMap::new();
    let mut ends = HashMap::new();
    for e in &evs {
        let ph = e["ph"].as_str().expect("ph");
        if ph == "M" {
            continue;
        }
        let key = (
            e["pid"].as_u64().expect("pid"),
            e["tid"].as_u64().expect("tid"),
        );
        assert!(e["ts"].is_number(), "ts on {e}");
        let stack = open.entry(key).or_default();
        let name_cat = || {
            (
                e["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a name on {e}"))
                    .to_owned(),
                e["cat"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a category on {e}"))
                    .to_owned(),
            )
        };
        match ph {
            "B" => stack.push(name_cat()),
            "E" => {
                let b = stack.pop().unwrap_or_else(|| panic!("E without B: {e}"));
                assert_eq!(b, name_cat(), "E named like its B: {e}");
            }
            "s" | "f" => {
                assert!(
                    !stack.is_empty(),
                    "flow event outside any slice cannot bind: {e}"
                );
                let id = (
                    e["cat"].as_str().unwrap().to_owned(),
                    e["name"].as_str().unwrap().to_owned(),
                    e["id"].as_str().unwrap().to_owned(),
                );
                if ph == "s" {
                    assert!(starts.insert(id, e.clone()).is_none(), "flow id reused");
                } else {
                    assert_eq!(e["bp"], "e");
                    assert!(ends.insert(id, e.clone()).is_none(), "flow id reused");
                }
            }
            "i" | "C" | "b" | "e" => {}
            // Complete slices: traced I/O calls, off-CPU intervals and
            // system calls, each with its duration.
            "X" => {
                assert!(e["dur"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
                assert!(
                    matches!(e["cat"].as_str(), Some("io" | "sched" | "syscall")),
                    "{e}"
                );
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    assert!(
        open.values().all(|s| s.is_empty()),
        "unbalanced slices: {open:?}"
    );
    for (id, f) in &ends {
        let s = starts
            .get(id)
            .unwrap_or_else(|| panic!("flow end without start: {f}"));
        assert!(
            s["ts"].as_f64() <= f["ts"].as_f64(),
            "flow {id:?} received before sent"
        );
    }
    evs
}

#[test]
fn worker_pool_demo_shows_every_worker_and_every_spawn_arrow() {
    let common::ExampleRun { cwd, out } = common::run_example("worker_pool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The summary names the workers' function with its 10 calls.
    let line = stdout
        .lines()
        .find(|l| l.contains("(worker_pool::worker_function)"))
        .expect("worker_function in summary");
    assert_eq!(line.split_whitespace().next(), Some("10"), "{line}");
    assert!(stdout.contains("== whole process tree: 11 processes =="));
    // The parent waits with `mpprof::wait`, so the critical path goes from
    // its wait into a worker's work.
    let cp = stdout
        .split("== critical path ==")
        .nth(1)
        .expect("a critical path section");
    let header = cp
        .lines()
        .find(|l| l.starts_with("Critical path: "))
        .unwrap();
    assert!(!header.ends_with("in 1 process"), "{header}");
    assert!(
        cp.contains("(worker_pool::worker_function)"),
        "a worker's work is on the critical path: {cp}"
    );

    let json = std::fs::read(cwd.path().join("trace.json")).unwrap();
    let evs = check_chrome(&json);
    let (system, procs): (Vec<&Value>, Vec<&Value>) = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .partition(|e| {
            e["args"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("system"))
        });
    assert_eq!(procs.len(), 11);
    // Resources on the same timeline: each process's CPU % and RSS, and
    // the host's "system" process with its CPU %.
    assert_eq!(system.len(), 1, "one host");
    for p in procs.iter().chain(&system) {
        let cpu = evs
            .iter()
            .filter(|e| e["ph"] == "C" && e["pid"] == p["pid"] && e["name"] == "CPU %")
            .count();
        assert!(cpu >= 1, "CPU % of {p}");
    }
    for p in &procs {
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "C" && e["pid"] == p["pid"] && e["name"] == "RSS (MiB)"),
            "RSS of {p}"
        );
    }
    assert!(procs.iter().all(|p| p["args"]["name"]
        .as_str()
        .unwrap()
        .starts_with("worker_pool (pid ")));

    // The parent is the process with the spawn flows.
    let sends: Vec<&Value> = evs
        .iter()
        .filter(|e| e["ph"] == "s" && e["args"]["flow"] == "spawn")
        .collect();
    assert_eq!(sends.len(), 10, "10 spawn arrows");
    let parent = sends[0]["pid"].as_u64().unwrap();
    assert!(sends.iter().all(|s| s["pid"].as_u64() == Some(parent)));
    // And 10 arrows back, from each worker's end to the parent's
    // `mpprof::wait`.
    let exits: Vec<&Value> = evs
        .iter()
        .filter(|e| e["ph"] == "s" && e["args"]["flow"] == "exit")
        .collect();
    assert_eq!(exits.len(), 10, "10 exit arrows");
    assert!(exits.iter().all(|s| s["pid"].as_u64() != Some(parent)));
    let ends: HashMap<&str, &Value> = evs
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    let ts = |e: &Value| e["ts"].as_f64().unwrap();
    let parent_events: Vec<f64> = evs
        .iter()
        .filter(|e| e["ph"] != "M" && e["pid"].as_u64() == Some(parent))
        .map(ts)
        .collect();
    let (p0, p1) = (
        parent_events.iter().cloned().fold(f64::MAX, f64::min),
        parent_events.iter().cloned().fold(f64::MIN, f64::max),
    );
    let mut children = HashSet::new();
    for s in &sends {
        let f = ends[s["id"].as_str().unwrap()];
        let child = f["pid"].as_u64().unwrap();
        assert_ne!(child, parent);
        assert!(children.insert(child), "one arrow per child");
        // The child's first event is the arrow's end, after its start
        // (its resource samples, which are not events, may come first).
        let first = evs
            .iter()
            .filter(|e| e["ph"] != "M" && e["ph"] != "C" && e["pid"].as_u64() == Some(child))
            .map(ts)
            .fold(f64::MAX, f64::min);
        assert!(
            ts(s) <= first && first == ts(f),
            "child {child} starts after the spawn"
        );
    }
    assert_eq!(children.len(), 10);
    // All worker_function slices lie inside the parent's lifetime.
    let mut open: HashMap<(u64, u64), f64> = HashMap::new();
    let mut n = 0;
    for e in &evs {
        let key = (
            e["pid"].as_u64().unwrap_or(0),
            e["tid"].as_u64().unwrap_or(0),
        );
        if e["ph"] == "B" && e["name"] == "worker_function" {
            open.insert(key, ts(e));
        } else if e["ph"] == "E" {
            if let Some(b) = open.remove(&key) {
                assert!(children.contains(&key.0));
                assert!(
                    p0 <= b && ts(e) <= p1,
                    "worker_function [{b}, {}] outside parent [{p0}, {p1}]",
                    ts(e)
                );
                assert!(ts(e) - b >= 9_000.0, "about 10 ms of work");
                n += 1;
            }
        }
    }
    assert_eq!(n, 10);
    firefox_profile_loads_with_every_process(&common::recorded_session(cwd.path()));
    otlp_export_delivers_every_span(&common::recorded_session(cwd.path()));
    speedscope_shows_slices_that_end(&cwd.path().join("trace.json"));
}

/// The demo's Chrome JSON in speedscope (its npm app, under Debian's
/// headless Chromium, driven by `tools/speedscope-check/check.mjs`): a
/// profile per process's main thread, each worker's `worker_function`
/// about 10 ms (not running to its thread's end), and the parent's
/// `spawn` slices closed before its wait. Speedscope closes a `B` only
/// with an `E` of the same name: unnamed `E`s made every slice a
/// staircase to the end of its thread.
fn speedscope_shows_slices_that_end(trace: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tool = root.join("tools/speedscope-check");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !tool.join("node_modules/speedscope").exists() || !std::path::Path::new(&chromium).exists() {
        println!(
            "SKIPPED the speedscope check: needs npm's speedscope in {} and {chromium} (.ci/run installs both)",
            tool.display()
        );
        return;
    }
    let out = std::process::Command::new("node")
        .arg(tool.join("check.mjs"))
        .arg(trace)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 11, "{v}");
    let profiles = v["profiles"].as_array().unwrap();
    let total = |p: &Value, sym: &str| {
        p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["symbol"] == sym)
            .and_then(|r| r["total_ms"].as_f64())
    };
    let workers: Vec<&Value> = profiles
        .iter()
        .filter(|p| total(p, "worker_function").is_some())
        .collect();
    assert_eq!(workers.len(), 10, "{v}");
    for w in workers {
        let f = total(w, "worker_function").unwrap();
        assert!((9.0..200.0).contains(&f), "worker_function {f} ms: {w}");
    }
    let parent = profiles
        .iter()
        .find(|p| total(p, "parent").is_some())
        .expect("the parent's profile");
    let (spawns, whole) = (
        total(parent, "spawn worker_pool").unwrap(),
        total(parent, "parent").unwrap(),
    );
    assert!(
        spawns < 0.9 * whole,
        "spawn slices end: {spawns} of {whole} ms"
    );
    assert!(total(parent, "wait_for_workers").is_some(), "{parent}");
}

/// OTLP export to a loopback OTLP/HTTP receiver that decodes each request
/// with the official protos' types (`opentelemetry-proto`) and refuses the
/// first one (503, which the exporter retries): every span arrives once,
/// in one trace, each worker's outermost span a child of the parent's span
/// that spawned it, with wall-clock times.
fn otlp_export_delivers_every_span(dir: &std::path::Path) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use std::io::{BufRead, Read, Write};
    let s = mpprof_merge::Session::open(&[dir]).unwrap();
    let spans_in_session = s
        .events()
        .filter(|e| matches!(e.kind, mpprof_merge::EventKind::Enter { .. }))
        .count();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut refused = false;
        l.set_nonblocking(false).unwrap();
        for conn in l.incoming() {
            let mut conn = std::io::BufReader::new(conn.unwrap());
            let mut len = 0;
            let mut first = String::new();
            conn.read_line(&mut first).unwrap();
            assert!(first.starts_with("POST /v1/traces HTTP/1.1"), "{first}");
            loop {
                let mut h = String::new();
                conn.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; len];
            conn.read_exact(&mut body).unwrap();
            let w = conn.get_mut();
            if !refused {
                refused = true;
                w.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                continue;
            }
            got.push(ExportTraceServiceRequest::decode(&body[..]).unwrap());
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let n: usize = got
                .iter()
                .flat_map(|r| &r.resource_spans)
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            if n >= spans_in_session {
                return got;
            }
        }
        got
    });
    let sent = mpprof_merge::write::otlp::send(&s, &url).unwrap();
    assert_eq!(sent, spans_in_session);
    let got = receiver.join().unwrap();
    let resources: Vec<_> = got.iter().flat_map(|r| &r.resource_spans).collect();
    let spans: Vec<_> = resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(spans.len(), spans_in_session);
    let mut ids: Vec<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "span ids unique");
    let traces: HashSet<&Vec<u8>> = spans.iter().map(|s| &s.trace_id).collect();
    assert_eq!(traces.len(), 1, "one causal tree, one trace");
    let pids: HashSet<i64> = resources
        .iter()
        .map(|r| {
            let attrs = &r.resource.as_ref().unwrap().attributes;
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|a| a.key == k)
                    .and_then(|a| a.value.clone())
            };
            use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
            assert_eq!(
                get("service.name").and_then(|v| v.value),
                Some(V::StringValue("worker_pool".into()))
            );
            match get("process.pid").and_then(|v| v.value) {
                Some(V::IntValue(p)) => p,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(pids.len(), 11);
    // Each worker's run_worker span has the parent's spawning span as its
    // parent, in another process's resource.
    let by_id: HashMap<&Vec<u8>, &str> = spans
        .iter()
        .map(|s| (&s.span_id, s.name.as_str()))
        .collect();
    let workers: Vec<_> = spans.iter().filter(|s| s.name == "run_worker").collect();
    assert_eq!(workers.len(), 10);
    for w in &workers {
        let parent = by_id.get(&w.parent_span_id).copied();
        assert!(parent.is_some(), "run_worker's parent span was exported");
        assert_ne!(parent, Some("run_worker"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for sp in &spans {
        assert!(sp.start_time_unix_nano <= sp.end_time_unix_nano);
        assert!(
            now - sp.start_time_unix_nano < 3_600_000_000_000,
            "wall-clock times"
        );
    }
}

/// The demo's Firefox Profiler profile has its 11 processes, each worker
/// with its `worker_function` marker; and the Firefox Profiler's own
/// command-line tool (npm `@firefox-devtools/profiler-cli`, installed by
/// `.ci/run` into `tools/firefox-profiler-cli`) loads it and counts them.
fn firefox_profile_loads_with_every_process(dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("demo.fxprof.json");
    let s = mpprof_merge::Session::open(&[dir]).unwrap();
    let mut f = std::fs::File::create(&file).unwrap();
    mpprof_merge::write::firefox::write(&s, &mut f).unwrap();
    drop(f);
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let threads = v["threads"].as_array().unwrap();
    let pids: std::collections::BTreeSet<&str> =
        threads.iter().filter_map(|t| t["pid"].as_str()).collect();
    assert_eq!(pids.len(), 11, "{pids:?}");
    let with_work = threads
        .iter()
        .filter(|t| {
            let strings = t["stringArray"].as_array().unwrap();
            t["markers"]["name"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| strings[i.as_u64().unwrap() as usize] == "worker_function")
        })
        .count();
    assert_eq!(with_work, 10);

    let cli = root.join("tools/firefox-profiler-cli/node_modules/.bin/profiler-cli");
    if !cli.exists() {
        println!(
            "SKIPPED the Firefox Profiler's own check: {} is not installed (.ci/run installs it with npm)",
            cli.display()
        );
        return;
    }
    let sessions = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(&cli)
            .args(args)
            .env("PROFILER_CLI_SESSION_DIR", sessions.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["load".as_ref(), file.as_os_str()]);
    let info = run(&["profile".as_ref(), "info".as_ref()]);
    run(&["stop".as_ref(), "--all".as_ref()]);
    assert!(info.contains("across 11 processes"), "{info}");
}

#[test]
fn pipeline_messages_carry_flows_in_both_directions() {
    let common::ExampleRun { cwd, out } = common::run_example("pipeline");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = check_chrome(&std::fs::read(cwd.path().join("trace.json")).unwrap());
    let procs = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .filter(|e| {
            !e["args"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("system"))
        })
        .count();
    assert_eq!(procs, 2, "and the host's system process");
    let mut by_name: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let starts: HashMap<&str, &Value> = evs
        .iter()
        .filter(|e| e["ph"] == "s")
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    for f in evs.iter().filter(|e| e["ph"] == "f") {
        let s = starts[f["id"].as_str().unwrap()];
        by_name
            .entry(f["args"]["flow"].as_str().unwrap().to_owned())
            .or_default()
            .push((s["pid"].as_u64().unwrap(), f["pid"].as_u64().unwrap()));
    }
    let req = &by_name["Request"];
    let resp = &by_name["Response"];
    assert_eq!((req.len(), resp.len(), by_name["spawn"].len()), (20, 20, 1));
    let (client, worker) = req[0];
    assert_ne!(client, worker);
    assert!(
        req.iter().all(|&x| x == (client, worker)),
        "requests go client -> worker"
    );
    assert!(
        resp.iter().all(|&x| x == (worker, client)),
        "responses go worker -> client"
    );
    let s = mpprof_merge::Session::open(&[common::recorded_session(cwd.path())]).unwrap();
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!((h.flows_matched, h.causality_violations), (41, 0));
    // Counted during the merge, as the reader counts them on its own.
    for (ph, p) in h.processes.iter().zip(&s.processes) {
        assert_eq!(ph.events, p.file.recorded_events(), "{}", ph.name);
    }
    assert!(!h.imperfect(), "a clean run is reported as clean");
    // Both pipes traced at both ends: the 20 requests and responses, byte
    // for byte on each side.
    let sum = mpprof_merge::analysis::summary::compute(&s);
    assert_eq!(sum.channel_links.len(), 2, "{:?}", sum.channel_links);
    for l in &sum.channel_links {
        let bytes: Vec<(&str, u64)> = l
            .ends
            .iter()
            .flat_map(|&(pi, ch)| sum.processes[pi].io.iter().filter(move |r| r.channel == ch))
            .map(|r| (r.op, r.bytes))
            .collect();
        let sum_of = |op: &str| bytes.iter().filter(|b| b.0 == op).map(|b| b.1).sum::<u64>();
        assert!(
            sum_of("write") > 0 && sum_of("write") == sum_of("read"),
            "{bytes:?}"
        );
    }
    assert!(evs
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "write pipe requests"));
}
