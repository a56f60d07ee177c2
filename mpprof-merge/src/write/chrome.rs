//! Chrome trace event JSON (opens in ui.perfetto.dev and chrome://tracing).
//!
//! Slices are `B`/`E` pairs on thread tracks, written as the merge streams
//! them, each `E` with its `B`'s name and category (speedscope and the
//! Firefox Profiler close a `B` only with an `E` of the same name); flows are v1 flow events (`s` binds to the enclosing slice, `f` with
//! `"bp":"e"` to the enclosing slice on the receiving side). A flow endpoint
//! outside any span gets a zero-length host slice so the arrow has something
//! to bind to. Timestamps are microseconds from the session start with three
//! decimals, so nanoseconds survive.

use std::collections::HashMap;
use std::io::{self, Write};

use mpprof_format::flow_name;

use super::{flow_key, thread_label, Tracks};
use crate::hash::FastMap;
use crate::merge::{End, Event, EventKind, MergeStats};
use crate::profile::Profile;
use crate::resources::{self, Resources};
use crate::trace::Session;

/// Writes the whole session as Chrome JSON.
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<MergeStats> {
    let res = Resources::of(session);
    let tracks = Tracks::new(session, res.hosts.len());
    let t0 = session.start_ns();
    // `mpprof::wait` records only the receiving end of a flow from the
    // child's end; its start is drawn at that end, on the lane of the
    // child's last event, when the receive is written.
    let exits = session
        .child_exits()
        .into_iter()
        .map(|(flow, (pi, lane, ts))| (flow, (tracks.pid(pi), tracks.tid(pi, lane), ts)))
        .collect();
    let mut w = Json {
        out,
        t0,
        first: true,
        open_async: HashMap::new(),
        exits,
        names: FastMap::default(),
        line: Vec::with_capacity(128),
    };
    w.out
        .write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    for (pi, p) in session.processes.iter().enumerate() {
        let pid = tracks.pid(pi);
        w.begin()?;
        write!(w.out, "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"name\":")?;
        w.string(&p.file.display_name())?;
        w.out.write_all(b"}}")?;
        w.begin()?;
        write!(
            w.out,
            "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"sort_index\":{pi}}}}}"
        )?;
        if let Some(info) = &p.file.info {
            // Which host and clock domain, for sessions that span several.
            w.begin()?;
            write!(w.out, "{{\"ph\":\"M\",\"name\":\"process_labels\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"labels\":")?;
            w.string(&format!("host {}", info.hostname))?;
            w.out.write_all(b"}}")?;
        }
        for (&lane, l) in &p.file.lanes {
            let tid = tracks.tid(pi, lane);
            w.begin()?;
            write!(w.out, "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"name\":")?;
            let name = if l.name.is_empty() {
                format!("thread {lane}")
            } else {
                l.name.clone()
            };
            w.string(&name)?;
            w.out.write_all(b"}}")?;
        }
    }
    let mut events = session.events();
    for e in events.by_ref() {
        w.event(session, &tracks, &e)?;
    }
    let stats = events.stats();
    w.resources(session, &tracks, &res)?;
    w.off_cpu(session, &tracks, &Profile::read(session))?;
    // Async spans still open when their process ended: closed there.
    let mut open: Vec<((usize, u64), (u32, u32))> = w.open_async.drain().collect();
    open.sort_unstable();
    for ((pi, id), (site, tid)) in open {
        let p = &session.processes[pi];
        let reason = if p.file.clean {
            End::OpenAtExit
        } else {
            End::Abrupt
        };
        w.async_event("e", session, pi, tracks.pid(pi), tid, p.end_ns, site, id)?;
        w.unfinished_args(reason)?;
        w.out.write_all(b"}")?;
    }
    // Process-level markers: abrupt ends.
    for (pi, p) in session.processes.iter().enumerate() {
        if !p.file.clean {
            let pid = tracks.pid(pi);
            w.begin()?;
            write!(w.out, "{{\"ph\":\"i\",\"s\":\"p\",\"name\":\"process ended abruptly\",\"pid\":{pid},\"tid\":{pid},\"ts\":")?;
            w.ts(p.end_ns)?;
            w.out.write_all(b",\"args\":{\"detail\":\"the process did not finish its buffer file (killed or crashed); open spans are closed here\"}}")?;
        }
    }
    w.out
        .write_all(b"\n],\"metadata\":{\"generator\":\"mpprof-merge\"}}\n")?;
    w.out.flush()?;
    Ok(stats)
}

struct Json<'a> {
    out: &'a mut dyn Write,
    t0: i64,
    first: bool,
    /// Open async spans: (process, id) -> (callsite, tid of the beginning).
    open_async: HashMap<(usize, u64), (u32, u32)>,
    /// Flows from a child's end to its parent's `mpprof::wait`: the child's
    /// (pid, tid, last event time).
    exits: HashMap<mpprof_format::FlowId, (u32, u32, i64)>,
    /// (process, callsite) to its name as a JSON string (escaped, quoted):
    /// looked up for most events, escaped once.
    names: FastMap<(usize, u32), Box<[u8]>>,
    /// The start of an event, built here and written at once.
    line: Vec<u8>,
}

impl Json<'_> {
    /// The resource tracks: counters of each process (CPU %, RSS, I/O,
    /// each thread's on-CPU %), and a "system" process per host.
    fn resources(&mut self, session: &Session, tracks: &Tracks, res: &Resources) -> io::Result<()> {
        for (pi, r) in res.processes.iter().enumerate() {
            let Some(r) = r else { continue };
            let p = &session.processes[pi];
            for t in resources::process_tracks(r, |tid, comm| thread_label(p, tid, comm)) {
                self.counter_track(tracks.pid(pi), &t)?;
            }
        }
        let n = session.processes.len();
        for (hi, h) in res.hosts.iter().enumerate() {
            let pid = tracks.host_pid(hi);
            self.begin()?;
            write!(self.out, "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"name\":")?;
            self.string(&h.label())?;
            self.out.write_all(b"}}")?;
            self.begin()?;
            write!(
                self.out,
                "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{pid},\"tid\":{pid},\"args\":{{\"sort_index\":{}}}}}",
                n + hi
            )?;
            for t in &h.tracks {
                self.counter_track(pid, t)?;
            }
        }
        Ok(())
    }

    /// Each off-CPU interval of the profiler (see [`crate::profile`]) as a
    /// complete slice on its thread, inside the span it interrupted. (The
    /// stack samples are in the Perfetto output only: Chrome JSON has no
    /// sample events that ui.perfetto.dev reads.)
    fn off_cpu(&mut self, session: &Session, tracks: &Tracks, prof: &Profile) -> io::Result<()> {
        for (pi, pp) in prof.processes.iter().enumerate() {
            let Some(pp) = pp else { continue };
            let p = &session.processes[pi];
            let pid = tracks.pid(pi);
            for o in &pp.off_cpu {
                let tid = tracks.thread_tid(pi, p, o.tid);
                self.complete(pid, tid, o.start, o.end)?;
                self.out.write_all(if o.preempted {
                    b",\"cat\":\"sched\",\"name\":\"off CPU (preempted)\"}"
                } else {
                    b",\"cat\":\"sched\",\"name\":\"off CPU (blocked)\"}"
                })?;
            }
            // Traced system calls (MPPROF_SYSCALLS=1), likewise.
            for c in &pp.syscalls {
                let tid = tracks.thread_tid(pi, p, c.tid);
                self.complete(pid, tid, c.start, c.end)?;
                self.out.write_all(b",\"cat\":\"syscall\",\"name\":")?;
                self.string(&crate::profile::syscall_name(c.nr))?;
                if c.errno != 0 {
                    self.out.write_all(b",\"args\":{\"error\":")?;
                    self.string(&super::io_error(c.errno))?;
                    self.out.write_all(b"}")?;
                }
                self.out.write_all(b"}")?;
            }
        }
        Ok(())
    }

    /// The start of a complete slice (`X`) from `start` to `end`: its head
    /// and duration; the caller writes the rest and the closing brace.
    fn complete(&mut self, pid: u32, tid: u32, start: i64, end: i64) -> io::Result<()> {
        self.head("X", pid, tid, start)?;
        self.out.write_all(b",\"dur\":")?;
        self.line.clear();
        push_us(&mut self.line, end.saturating_sub(start));
        self.out.write_all(&self.line)
    }

    /// A counter track of process `pid`.
    fn counter_track(&mut self, pid: u32, t: &resources::Track) -> io::Result<()> {
        let name = serde_json::to_vec(&t.name).map_err(io::Error::other)?;
        for &(ts, v) in &t.points {
            self.head("C", pid, pid, ts)?;
            self.out.write_all(b",\"cat\":\"resource\",\"name\":")?;
            self.out.write_all(&name)?;
            write!(self.out, ",\"args\":{{\"value\":{v}}}}}")?;
        }
        Ok(())
    }

    fn begin(&mut self) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        Ok(())
    }

    fn ts(&mut self, ns: i64) -> io::Result<()> {
        self.line.clear();
        push_us(&mut self.line, ns.saturating_sub(self.t0));
        self.out.write_all(&self.line)
    }

    fn string(&mut self, s: &str) -> io::Result<()> {
        serde_json::to_writer(&mut *self.out, s).map_err(io::Error::other)
    }

    /// The name of callsite `site` of process `pi`, as a JSON string.
    fn site_name(&mut self, s: &Session, pi: usize, site: u32) -> io::Result<()> {
        let name = self.names.entry((pi, site)).or_insert_with(|| {
            serde_json::to_vec(&*s.processes[pi].site_name(site))
                .expect("a str serializes")
                .into_boxed_slice()
        });
        self.out.write_all(name)
    }

    /// `{"ph":..,"pid":..,"tid":..,"ts":..` (and the separator before it),
    /// formatted by hand: this is most of what every event writes.
    fn head(&mut self, ph: &str, pid: u32, tid: u32, ts: i64) -> io::Result<()> {
        let l = &mut self.line;
        l.clear();
        if !std::mem::replace(&mut self.first, false) {
            l.extend_from_slice(b",\n");
        }
        let mut n = itoa::Buffer::new();
        l.extend_from_slice(b"{\"ph\":\"");
        l.extend_from_slice(ph.as_bytes());
        l.extend_from_slice(b"\",\"pid\":");
        l.extend_from_slice(n.format(pid).as_bytes());
        l.extend_from_slice(b",\"tid\":");
        l.extend_from_slice(n.format(tid).as_bytes());
        l.extend_from_slice(b",\"ts\":");
        push_us(l, ts.saturating_sub(self.t0));
        self.out.write_all(l)
    }

    /// The common part of an async event (`b`/`e`), without the closing
    /// brace: one async track per future (Perfetto keys it by cat, name, id).
    #[allow(clippy::too_many_arguments)]
    fn async_event(
        &mut self,
        ph: &str,
        s: &Session,
        pi: usize,
        pid: u32,
        tid: u32,
        ts: i64,
        site: u32,
        id: u64,
    ) -> io::Result<()> {
        let p = &s.processes[pi];
        self.head(ph, pid, tid, ts)?;
        self.out.write_all(b",\"cat\":\"async\",\"name\":")?;
        self.site_name(s, pi, site)?;
        let key = flow_key(mpprof_format::FlowId::from_parts(p.file.uid, id));
        write!(self.out, ",\"id\":\"0x{key:x}\"")
    }

    /// `,"args":{"unfinished":..}` for a span the merge closed.
    fn unfinished_args(&mut self, end: End) -> io::Result<()> {
        if let Some(reason) = end.reason() {
            self.out.write_all(b",\"args\":{\"unfinished\":")?;
            self.string(reason)?;
            self.out.write_all(if end == End::Abrupt {
                b",\"ended_abruptly\":true}"
            } else {
                b"}"
            })?;
        }
        Ok(())
    }

    fn event(&mut self, s: &Session, tracks: &Tracks, e: &Event) -> io::Result<()> {
        let p = &s.processes[e.proc];
        let (pid, tid) = (tracks.pid(e.proc), tracks.tid(e.proc, e.lane));
        match e.kind {
            EventKind::Enter { site } => {
                self.head("B", pid, tid, e.ts)?;
                self.out.write_all(b",\"cat\":\"span\",\"name\":")?;
                self.site_name(s, e.proc, site)?;
                self.out.write_all(b"}")
            }
            EventKind::Exit { site, end } => {
                // Named like its `B`: importers that close a `B` only with
                // an `E` of the same name (speedscope, the Firefox
                // Profiler's) would otherwise run every slice to the end of
                // its thread.
                self.head("E", pid, tid, e.ts)?;
                self.out.write_all(b",\"cat\":\"span\",\"name\":")?;
                self.site_name(s, e.proc, site)?;
                self.unfinished_args(end)?;
                self.out.write_all(b"}")
            }
            EventKind::Instant { site } => {
                self.head("i", pid, tid, e.ts)?;
                self.out
                    .write_all(b",\"s\":\"t\",\"cat\":\"event\",\"name\":")?;
                self.site_name(s, e.proc, site)?;
                self.out.write_all(b"}")
            }
            EventKind::Counter { site, value } if !value.is_finite() => {
                // JSON has no NaN or infinity: the sample is an instant
                // that says its value, where the counter's track has a gap.
                self.head("i", pid, tid, e.ts)?;
                self.out.write_all(b",\"s\":\"t\",\"name\":")?;
                self.site_name(s, e.proc, site)?;
                write!(
                    self.out,
                    ",\"args\":{{\"counter value\":\"{value}\",\"note\":\"not a number JSON can hold: left out of the counter's track\"}}}}"
                )
            }
            EventKind::Counter { site, value } => {
                self.head("C", pid, tid, e.ts)?;
                self.out.write_all(b",\"name\":")?;
                self.site_name(s, e.proc, site)?;
                // Integers in full; a float as Rust prints it (which JSON
                // reads back to the same f64).
                write!(self.out, ",\"args\":{{\"value\":{value}}}}}")
            }
            EventKind::Io {
                channel,
                start,
                call,
            } => {
                self.complete(pid, tid, start, e.ts)?;
                self.out.write_all(b",\"cat\":\"io\",\"name\":")?;
                self.string(&super::io_name(p, channel, call))?;
                write!(self.out, ",\"args\":{{\"bytes\":{}", call.bytes)?;
                if call.blocked {
                    self.out.write_all(b",\"blocked\":true")?;
                }
                if call.errno != 0 {
                    self.out.write_all(b",\"error\":")?;
                    self.string(&super::io_error(call.errno))?;
                }
                self.out.write_all(b"}}")
            }
            EventKind::Lost { count, overwritten } => {
                self.head("i", pid, tid, e.ts)?;
                let (name, detail) = if overwritten {
                    ("events overwritten", "flight recorder (keep-last): this thread's events before this point were overwritten; what is left of its trace starts here")
                } else {
                    ("events lost", "buffer budget used up or disk full: this thread's events around here are missing")
                };
                write!(
                    self.out,
                    ",\"s\":\"t\",\"cat\":\"mpprof\",\"name\":\"{count} {name}\",\"args\":{{\"lost_events\":{count},\"detail\":\"{detail}\"}}}}"
                )
            }
            EventKind::AsyncBegin { site, id } => {
                self.open_async.insert((e.proc, id), (site, tid));
                self.async_event("b", s, e.proc, pid, tid, e.ts, site, id)?;
                self.out.write_all(b"}")
            }
            EventKind::AsyncEnd { site, id } => {
                if self.open_async.remove(&(e.proc, id)).is_none() {
                    return Ok(()); // its beginning was not recorded (overwritten, lost)
                }
                self.async_event("e", s, e.proc, pid, tid, e.ts, site, id)?;
                self.out.write_all(b"}")
            }
            EventKind::FlowOut { site, flow } | EventKind::FlowIn { site, flow } => {
                let out = matches!(e.kind, EventKind::FlowOut { .. });
                let name = p.site_name(site);
                if let Some((cpid, ctid, ts)) = self.exits.remove(&flow).filter(|_| !out) {
                    // The start of a wait's flow, on a zero-length "exit"
                    // slice at the child's last event (out of time order,
                    // which the JSON importers accept).
                    self.head("B", cpid, ctid, ts)?;
                    self.out
                        .write_all(b",\"cat\":\"flow\",\"name\":\"exit\"}")?;
                    self.head("s", cpid, ctid, ts)?;
                    write!(
                        self.out,
                        ",\"cat\":\"flow\",\"name\":\"flow\",\"id\":\"0x{:x}\",\"args\":{{\"flow\":\"exit\",\"flow_id\":\"{flow}\"}}}}",
                        flow_key(flow)
                    )?;
                    self.head("E", cpid, ctid, ts)?;
                    self.out
                        .write_all(b",\"cat\":\"flow\",\"name\":\"exit\"}")?;
                }
                let host = e.depth == 0;
                if host {
                    self.head("B", pid, tid, e.ts)?;
                    self.out.write_all(b",\"cat\":\"flow\",\"name\":")?;
                    self.string(&host_label(out, &name))?;
                    self.out.write_all(b"}")?;
                }
                self.head(if out { "s" } else { "f" }, pid, tid, e.ts)?;
                write!(
                    self.out,
                    ",\"cat\":\"flow\",\"name\":\"flow\",\"id\":\"0x{:x}\"",
                    flow_key(flow)
                )?;
                if !out {
                    self.out.write_all(b",\"bp\":\"e\"")?;
                }
                self.out.write_all(b",\"args\":{\"flow\":")?;
                self.string(&name)?;
                write!(self.out, ",\"flow_id\":\"{flow}\"}}}}")?;
                if host {
                    self.head("E", pid, tid, e.ts)?;
                    self.out.write_all(b",\"cat\":\"flow\",\"name\":")?;
                    self.string(&host_label(out, &name))?;
                    self.out.write_all(b"}")?;
                }
                Ok(())
            }
        }
    }
}

/// The name of the zero-length slice a flow endpoint outside any span gets.
fn host_label(out: bool, name: &str) -> String {
    match (out, name) {
        (false, n) if n == flow_name::SPAWN || n == flow_name::FORK => "process start".to_owned(),
        (true, n) => format!("send {n}"),
        (false, n) => format!("recv {n}"),
    }
}

/// Appends `ns` nanoseconds as microseconds with three decimals.
fn push_us(l: &mut Vec<u8>, ns: i64) {
    if ns < 0 {
        l.push(b'-');
    }
    let a = ns.unsigned_abs();
    l.extend_from_slice(itoa::Buffer::new().format(a / 1000).as_bytes());
    let f = a % 1000;
    let digit = |d: u64| b'0' + d as u8; // d < 10
    l.extend_from_slice(&[b'.', digit(f / 100), digit(f / 10 % 10), digit(f % 10)]);
}
