//! The session's spans as OpenTelemetry (OTLP) spans, for a tracing
//! backend that speaks OTLP (Jaeger, Grafana Tempo, an OpenTelemetry
//! collector): an `ExportTraceServiceRequest` of the `opentelemetry-proto`
//! crate's types (generated from the official protos), written to a file
//! or sent over OTLP/HTTP (protobuf) in batches.
//!
//! - **Resource** per process: `service.name` (the executable's file name),
//!   `process.pid`, `host.name`, `host.id`; scope `mpprof`.
//! - **Spans**: every instrumented span, with its callsite as `code.function`,
//!   `code.filepath` and `code.lineno`, and `thread.id` / `thread.name`. A
//!   span the merge had to close (the process died, or it never ended)
//!   has status ERROR and says why.
//! - **Parents**: the enclosing span on the same thread; for a process's
//!   outermost spans, the span of its parent process that spawned it (the
//!   spawn flow), so a process tree is one tree of spans.
//! - **Trace ids**: one per causal tree, from the root process of the
//!   spawn tree (its uid and the session's start).
//! - **Links**: every other flow that ends in a span (a message received)
//!   links it to the span that sent it, with the flow's name.
//! - **Times**: wall-clock ns, from the session's clock anchors.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mpprof_format::FlowId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

use crate::merge::{EventKind, MergeStats};
use crate::trace::Session;

/// One span while the events are read.
struct Open {
    proc: usize,
    lane: u32,
    site: u32,
    start: i64,
    end: i64,
    /// Enclosing span on the same lane (index).
    parent: Option<usize>,
    /// Flows received in it (or just before it, outside any span).
    received: Vec<FlowId>,
    /// Why it did not end normally.
    unfinished: Option<&'static str>,
}

/// The export request of `session`: every span, once.
pub fn request(session: &Session) -> (ExportTraceServiceRequest, MergeStats) {
    let mut spans: Vec<Open> = Vec::new();
    let mut stacks: HashMap<(usize, u32), Vec<usize>> = HashMap::new();
    // Flows received outside any span: they go to the lane's next span.
    let mut waiting: HashMap<(usize, u32), Vec<FlowId>> = HashMap::new();
    // Where each flow was sent: the innermost span then (if any).
    let mut sent: HashMap<FlowId, Option<usize>> = HashMap::new();
    let mut events = session.events();
    for e in events.by_ref() {
        let key = (e.proc, e.lane);
        match e.kind {
            EventKind::Enter { site } => {
                let stack = stacks.entry(key).or_default();
                spans.push(Open {
                    proc: e.proc,
                    lane: e.lane,
                    site,
                    start: e.ts,
                    end: e.ts,
                    parent: stack.last().copied(),
                    received: waiting.remove(&key).unwrap_or_default(),
                    unfinished: None,
                });
                stack.push(spans.len() - 1);
            }
            EventKind::Exit { end, .. } => {
                if let Some(i) = stacks.entry(key).or_default().pop() {
                    spans[i].end = e.ts;
                    spans[i].unfinished = end.reason();
                }
            }
            EventKind::FlowOut { flow, .. } => {
                let inner = stacks.get(&key).and_then(|s| s.last().copied());
                sent.entry(flow).or_insert(inner);
            }
            EventKind::FlowIn { flow, .. } => match stacks.get(&key).and_then(|s| s.last()) {
                Some(&i) => spans[i].received.push(flow),
                None => waiting.entry(key).or_default().push(flow),
            },
            _ => {}
        }
    }
    let stats = events.stats();

    // Each process's parent span (the one that spawned it) and process.
    let n = session.processes.len();
    let mut parent_span: Vec<Option<usize>> = vec![None; n];
    let mut parent_proc: Vec<Option<usize>> = vec![None; n];
    for (pi, p) in session.processes.iter().enumerate() {
        if let Some(f) = p.file.info.as_ref().and_then(|i| i.parent_flow) {
            if let Some(&Some(s)) = sent.get(&f) {
                parent_span[pi] = Some(s);
                parent_proc[pi] = Some(spans[s].proc);
            }
        }
        if parent_proc[pi].is_none() {
            parent_proc[pi] = p.parent_link.map(|l| l.parent);
        }
    }
    let origin = session.start_ns();
    let trace_id = |pi: usize| -> Vec<u8> {
        let mut root = pi;
        for _ in 0..n {
            match parent_proc[root] {
                Some(p) if p != root => root = p,
                _ => break,
            }
        }
        let mut id = session.processes[root].file.uid.to_be_bytes().to_vec();
        id.extend((origin as u64).to_be_bytes());
        id
    };
    let span_id = |i: usize| ((i as u64) + 1).to_be_bytes().to_vec();
    // Wall-clock time of a trace time: from the first anchor there is.
    let wall = session
        .processes
        .iter()
        .find_map(|p| {
            let a = p.file.anchors.first()?;
            Some(a.real_ns as i64 - p.ns(a.ts))
        })
        .unwrap_or(0);
    let unix = |ns: i64| ns.saturating_add(wall).max(0) as u64;

    let mut by_proc: Vec<Vec<Span>> = (0..n).map(|_| Vec::new()).collect();
    let trace_ids: Vec<Vec<u8>> = (0..n).map(trace_id).collect();
    for (i, s) in spans.iter().enumerate() {
        let p = &session.processes[s.proc];
        let site = p.site(s.site);
        let lane = p.file.lanes.get(&s.lane);
        let mut attributes = vec![kv_i("thread.id", lane.map_or(0, |l| i64::from(l.tid)))];
        if let Some(l) = lane.filter(|l| !l.name.is_empty()) {
            attributes.push(kv_s("thread.name", &l.name));
        }
        if let Some(site) = site {
            attributes.push(kv_s("code.function", &site.path));
            if !site.file.is_empty() {
                attributes.push(kv_s("code.filepath", &site.file));
                attributes.push(kv_i("code.lineno", i64::from(site.line)));
            }
        }
        let (parent, spawned_by) = match s.parent {
            Some(q) => (Some(q), None),
            None => (parent_span[s.proc], parent_span[s.proc]),
        };
        let links = s
            .received
            .iter()
            .filter_map(|f| Some((f, (*sent.get(f)?)?)))
            .filter(|&(_, src)| Some(src) != spawned_by)
            .map(|(f, src)| span::Link {
                trace_id: trace_ids[spans[src].proc].clone(),
                span_id: span_id(src),
                attributes: vec![kv_s("mpprof.flow", &f.to_string())],
                ..Default::default()
            })
            .collect();
        by_proc[s.proc].push(Span {
            trace_id: trace_ids[s.proc].clone(),
            span_id: span_id(i),
            parent_span_id: parent.map(span_id).unwrap_or_default(),
            name: p.site_name(s.site).into_owned(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: unix(s.start),
            end_time_unix_nano: unix(s.end.max(s.start)),
            attributes,
            links,
            status: s.unfinished.map(|why| Status {
                message: why.to_owned(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        });
    }
    let resource_spans = session
        .processes
        .iter()
        .zip(by_proc)
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(p, spans)| {
            let info = p.file.info.as_ref();
            let exe = info.map(|i| i.exe.as_str()).unwrap_or("");
            let service = exe
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown");
            let mut attributes = vec![
                kv_s("service.name", service),
                kv_i("process.pid", i64::from(p.file.pid)),
            ];
            if let Some(i) = info {
                attributes.push(kv_s("host.name", &i.hostname));
                attributes.push(kv_s("host.id", &i.host_id));
            }
            ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mpprof".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, stats)
}

fn kv_s(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    }
}

fn kv_i(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// Writes the export request (protobuf) to `out`: an `.otlp.pb` file an
/// OpenTelemetry collector's file receiver, or `curl --data-binary` to
/// `/v1/traces`, takes as it is.
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let (req, stats) = request(session);
    out.write_all(&req.encode_to_vec())?;
    out.flush()?;
    Ok(stats)
}

/// Most spans per request.
pub const BATCH_SPANS: usize = 2000;

/// How many times a request is tried before giving up.
const ATTEMPTS: u32 = 5;

/// Sends every span of `session` to the OTLP/HTTP endpoint `url`
/// (`http://host:4318`, or a full `.../v1/traces`), in requests of at most
/// [`BATCH_SPANS`] spans, each retried with backoff (100 ms, doubling) on a
/// refused connection, 429 and 5xx. Returns the spans sent; an error says
/// what the endpoint answered.
pub fn send(session: &Session, url: &str) -> Result<usize, String> {
    let (host, port, path) = parse_url(url)?;
    let (req, _) = request(session);
    let mut sent = 0;
    for batch in batches(req) {
        let body = batch.encode_to_vec();
        let n: usize = batch
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match post(&host, port, &path, &body) {
                Ok(200..=299) => break,
                Ok(code) if (code == 429 || code >= 500) && attempt < ATTEMPTS => {}
                Ok(code) => {
                    return Err(format!(
                        "{url} answered HTTP {code} to a batch of {n} spans ({sent} spans sent before it)"
                    ))
                }
                Err(e) if attempt < ATTEMPTS => {
                    let _ = e;
                }
                Err(e) => {
                    return Err(format!(
                        "{url}: {e} (after {ATTEMPTS} attempts; {sent} spans sent before)"
                    ))
                }
            }
            std::thread::sleep(wait);
            wait *= 2;
            attempt += 1;
        }
        sent += n;
    }
    Ok(sent)
}

/// The request split so that none has more than [`BATCH_SPANS`] spans
/// (a process's spans may be split across requests, each with its
/// resource).
fn batches(req: ExportTraceServiceRequest) -> Vec<ExportTraceServiceRequest> {
    let mut out: Vec<ExportTraceServiceRequest> = Vec::new();
    let mut cur = ExportTraceServiceRequest::default();
    let mut count = 0;
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for chunk in ss.spans.chunks(BATCH_SPANS) {
                if count + chunk.len() > BATCH_SPANS && count > 0 {
                    out.push(std::mem::take(&mut cur));
                    count = 0;
                }
                count += chunk.len();
                cur.resource_spans.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: chunk.to_vec(),
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    if count > 0 || out.is_empty() {
        out.push(cur);
    }
    out
}

/// `http://host[:port][/path]`: host, port (4318) and path (`/v1/traces`).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url}: only http:// OTLP endpoints are supported (for https, send to a local collector)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url}: bad port {p:?}"))?,
        ),
        None => (authority, 4318),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let path = if path.is_empty() || path == "/" {
        "/v1/traces".to_owned()
    } else {
        path.to_owned()
    };
    Ok((host.to_owned(), port, path))
}

/// One HTTP/1.1 POST of `body` as `application/x-protobuf`; the status.
fn post(host: &str, port: u16, path: &str, body: &[u8]) -> io::Result<u16> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    s.flush()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 1024 {
        if s.read(&mut b)? == 0 {
            break;
        }
        head.push(b[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {:?}", line.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed_and_https_refused() {
        assert_eq!(
            parse_url("http://h:1234").unwrap(),
            ("h".into(), 1234, "/v1/traces".into())
        );
        assert_eq!(
            parse_url("http://h").unwrap(),
            ("h".into(), 4318, "/v1/traces".into())
        );
        assert_eq!(
            parse_url("http://h:9/x/y").unwrap(),
            ("h".into(), 9, "/x/y".into())
        );
        assert!(parse_url("https://h").unwrap_err().contains("only http://"));
        assert!(parse_url("http://h:x").is_err());
    }

    #[test]
    fn batches_hold_every_span_once_and_at_most_the_limit() {
        let spans = |n: usize| {
            (0..n)
                .map(|i| Span {
                    span_id: (i as u64).to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        let rs = |n| ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: spans(n),
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![rs(BATCH_SPANS + 5), rs(3), rs(BATCH_SPANS)],
        };
        let b = batches(req);
        let counts: Vec<usize> = b
            .iter()
            .map(|r| {
                r.resource_spans
                    .iter()
                    .map(|x| x.scope_spans[0].spans.len())
                    .sum()
            })
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 2 * BATCH_SPANS + 8);
        assert!(counts.iter().all(|&c| c <= BATCH_SPANS), "{counts:?}");
    }
}
