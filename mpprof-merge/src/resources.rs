//! Resource samples: what each process, its threads and its host did with
//! the machine, read from the sampler's counter records (see
//! `mpprof_format::resource`) on the merged timeline, and the tracks,
//! tables and attributions made from them.
//!
//! A sample is the run of counter records that starts with a `sample`
//! counter; its records take that counter's time. A series holds a value
//! from the sample it was recorded in until the next record (the recorder
//! leaves unchanged values out). A cumulative series (CPU time, bytes so
//! far) is shown as its rate over each interval between two samples; a
//! level (RSS, threads, load) as it is.

use std::collections::BTreeMap;

use mpprof_format::resource::key;
use mpprof_format::{counter, kind, Resource, Scope};

use crate::read::RecordReader;
use crate::trace::{Process, Session};

/// One series of one process's sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// What it measures (its `site` is the callsite in the process's file).
    pub resource: Resource,
    /// Values as recorded, each at its sample's time (ns, aligned).
    pub points: Vec<(i64, f64)>,
}

/// The resource samples of one process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessResources {
    /// Sampling interval, ns (0: sampling was off).
    pub interval_ns: u64,
    /// The sampler thread's OS thread id (0 unknown).
    pub sampler_tid: u32,
    /// What the sampler could not read, and why.
    pub unavailable: Vec<String>,
    /// Times of the samples (ns, aligned), in order.
    pub ticks: Vec<i64>,
    /// Times of the samples that read the host (fewer), in order.
    pub host_ticks: Vec<i64>,
    /// Series by (scope, key, instance).
    pub series: BTreeMap<(Scope, String, String), Series>,
    /// Resource counter records read (samples' markers included).
    pub records: u64,
}

/// A rate over one interval between two samples: `(start, end, value per
/// second)`.
pub type Rate = (i64, i64, f64);

impl ProcessResources {
    /// A series of this process.
    pub fn get(&self, scope: Scope, key: &str, instance: &str) -> Option<&Series> {
        self.series
            .get(&(scope, key.to_owned(), instance.to_owned()))
    }

    /// The last value of a process-scope series.
    pub fn last(&self, key: &str) -> Option<f64> {
        Some(self.get(Scope::Process, key, "")?.points.last()?.1)
    }

    /// The largest value of a process-scope series.
    pub fn max(&self, key: &str) -> Option<f64> {
        self.get(Scope::Process, key, "")?
            .points
            .iter()
            .map(|p| p.1)
            .reduce(f64::max)
    }

    /// The samples that time series of `scope`: the host's samples for
    /// host series, else all.
    pub fn ticks_of(&self, scope: Scope) -> &[i64] {
        match scope {
            Scope::Host => &self.host_ticks,
            _ => &self.ticks,
        }
    }

    /// The values of `s` at each of its samples (see
    /// [`ProcessResources::ticks_of`]; `None` before its first record).
    pub fn at_ticks(&self, s: &Series) -> Vec<Option<f64>> {
        let ticks = self.ticks_of(s.resource.scope);
        let mut out = Vec::with_capacity(ticks.len());
        let mut i = 0;
        let mut v = None;
        for &t in ticks {
            while i < s.points.len() && s.points[i].0 <= t {
                v = Some(s.points[i].1);
                i += 1;
            }
            out.push(v);
        }
        out
    }

    /// The summed rate per second of cumulative series `parts` over each
    /// interval between samples where all are known.
    /// `parts` are of one scope.
    pub fn rates(&self, parts: &[&Series]) -> Vec<Rate> {
        let Some(first) = parts.first() else {
            return Vec::new();
        };
        let ticks = self.ticks_of(first.resource.scope);
        let vals: Vec<Vec<Option<f64>>> = parts.iter().map(|s| self.at_ticks(s)).collect();
        let mut out = Vec::new();
        for i in 1..ticks.len() {
            let (t0, t1) = (ticks[i - 1], ticks[i]);
            if t1 <= t0 {
                continue;
            }
            let mut d = 0.0;
            let mut known = true;
            for v in &vals {
                match (v[i - 1], v[i]) {
                    (Some(a), Some(b)) => d += (b - a).max(0.0),
                    _ => known = false,
                }
            }
            if known {
                out.push((t0, t1, d * 1e9 / (t1 as f64 - t0 as f64)));
            }
        }
        out
    }

    /// The share `num / (num + rest)` of each interval's increases (a
    /// host CPU's busy time among busy and idle), in percent.
    pub fn shares(&self, num: &Series, rest: &Series) -> Vec<Rate> {
        let ticks = self.ticks_of(num.resource.scope);
        let a = self.at_ticks(num);
        let b = self.at_ticks(rest);
        let mut out = Vec::new();
        for i in 1..ticks.len() {
            if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (a[i - 1], a[i], b[i - 1], b[i]) {
                let (da, db) = ((a1 - a0).max(0.0), (b1 - b0).max(0.0));
                if da + db > 0.0 {
                    out.push((ticks[i - 1], ticks[i], 100.0 * da / (da + db)));
                }
            }
        }
        out
    }

    /// Thread `tid`'s on-CPU and run-queue wait series.
    pub fn thread_series(&self, tid: u32) -> Option<(&Series, Option<&Series>)> {
        let scope = Scope::Thread { tid };
        let (k, on) = self
            .series
            .range((scope, String::new(), String::new())..)
            .take_while(|(k, _)| k.0 == scope)
            .find(|(k, _)| k.1 == key::ON_CPU)?;
        Some((on, self.get(scope, key::RUN_WAIT, &k.2)))
    }

    /// Thread `tid`'s time on a CPU and waiting for one between `a` and
    /// `b` (ns); see [`ThreadCpu::between`]. `None` without samples of the
    /// thread.
    pub fn thread_cpu(&self, tid: u32, a: i64, b: i64) -> Option<(f64, f64)> {
        Some(self.thread(tid)?.between(a, b))
    }

    /// Thread `tid`'s samples, found once for many [`ThreadCpu::between`]
    /// (the summary asks at every call's exit).
    pub fn thread(&self, tid: u32) -> Option<ThreadCpu<'_>> {
        let (on, wait) = self.thread_series(tid)?;
        Some(ThreadCpu { on, wait })
    }
}

/// A thread's on-CPU and run-queue wait series (see
/// [`ProcessResources::thread`]).
#[derive(Clone, Copy, Debug)]
pub struct ThreadCpu<'a> {
    on: &'a Series,
    wait: Option<&'a Series>,
}

impl ThreadCpu<'_> {
    /// The thread's time on a CPU and waiting for one between `a` and `b`
    /// (ns), from its cumulative `schedstat` samples interpolated linearly
    /// between samples (exact at sample times; inside an interval the
    /// thread is taken to run evenly). Time before the thread's first
    /// sample or after its last counts as neither.
    pub fn between(&self, a: i64, b: i64) -> (f64, f64) {
        let f = |s: &Series| interpolate(s, b) - interpolate(s, a);
        (f(self.on).max(0.0), self.wait.map_or(0.0, f).max(0.0))
    }
}

/// The value of cumulative series `s` at `t`, linear between its points
/// and clamped outside them.
fn interpolate(s: &Series, t: i64) -> f64 {
    let p = &s.points;
    let i = p.partition_point(|x| x.0 <= t);
    match (i.checked_sub(1).map(|j| p[j]), p.get(i)) {
        (None, Some(&(_, v))) => v,
        (Some((_, v)), None) => v,
        (Some((t0, v0)), Some(&(t1, v1))) if t1 > t0 => {
            v0 + (v1 - v0) * (t as f64 - t0 as f64) / (t1 as f64 - t0 as f64)
        }
        (Some((_, v)), Some(_)) => v,
        (None, None) => 0.0,
    }
}

/// Reads the resource samples of process `p`: `None` when its file has
/// neither samples nor a sampler entry (a writer from before resource
/// sampling).
pub fn of_process(p: &Process) -> Option<ProcessResources> {
    let f = &p.file;
    if f.resources.is_empty() && f.sampler.is_none() {
        return None;
    }
    let mut r = ProcessResources::default();
    if let Some(s) = &f.sampler {
        r.interval_ns = s.interval_ns;
        r.sampler_tid = s.tid;
        r.unavailable = s.unavailable.clone();
    }
    if f.resources.is_empty() {
        return Some(r);
    }
    // The sampler's lane(s); every lane if the sampler entry was lost.
    let lanes: Vec<u32> = f
        .lanes
        .iter()
        .filter(|(_, l)| f.sampler.is_none() || l.tid == r.sampler_tid)
        .map(|(&k, _)| k)
        .collect();
    let mut points: BTreeMap<u32, Vec<(i64, f64)>> = BTreeMap::new();
    let mut ticks = Vec::new();
    let mut host_ticks = Vec::new();
    for lane in lanes {
        let mut tick: Option<i64> = None;
        let mut host_tick: Option<i64> = None;
        for c in &f.lanes[&lane].chunks {
            let mut rd = RecordReader::new(*c);
            while let Some(e) = rd.next_event(&f.file) {
                if e.kind != kind::COUNTER {
                    continue;
                }
                let Some(res) = f.resources.get(&e.site) else {
                    continue;
                };
                let [v, ty] = e.payload.unwrap_or_default();
                let v = match ty {
                    counter::INT => v as i64 as f64,
                    counter::UINT => v as f64,
                    counter::FLOAT => f64::from_bits(v),
                    _ => continue,
                };
                if !v.is_finite() {
                    continue;
                }
                r.records += 1;
                match (res.scope, res.key.as_str()) {
                    (Scope::Process, key::SAMPLE) => {
                        let t = p.ns(e.ts);
                        tick = Some(t);
                        ticks.push(t);
                        continue;
                    }
                    (Scope::Host, key::HOST_SAMPLE) => {
                        let t = p.ns(e.ts);
                        host_tick = Some(t);
                        host_ticks.push(t);
                        continue;
                    }
                    _ => {}
                }
                // A record before the lane's first surviving sample counter
                // (the flight recorder overwrote it) takes its own time.
                let current = if res.scope == Scope::Host {
                    host_tick
                } else {
                    tick
                };
                let t = current.unwrap_or_else(|| p.ns(e.ts));
                points.entry(e.site).or_default().push((t, v));
            }
        }
    }
    for t in [&mut ticks, &mut host_ticks] {
        t.sort_unstable();
        t.dedup();
    }
    r.ticks = ticks;
    r.host_ticks = host_ticks;
    for (site, mut pts) in points {
        let res = &f.resources[&site];
        pts.sort_by_key(|p| p.0);
        let k = (res.scope, res.key.clone(), res.instance.clone());
        r.series
            .entry(k)
            .or_insert_with(|| Series {
                resource: res.clone(),
                points: Vec::new(),
            })
            .points
            .extend(pts);
    }
    Some(r)
}

/// A track to draw: a name and its values, each holding until the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// Display name, with its unit.
    pub name: String,
    /// The thread it belongs to (its OS thread id), if any.
    pub tid: Option<u32>,
    /// `(time ns aligned, value)`, in time order.
    pub points: Vec<(i64, f64)>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// A rate's intervals as track points: each value from its interval's
/// start, and 0 from the end of the last.
fn rate_points(rates: &[Rate], scale: f64) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(rates.len() + 1);
    for &(t0, _, v) in rates {
        out.push((t0, v * scale));
    }
    if let Some(&(_, t1, _)) = rates.last() {
        out.push((t1, 0.0));
    }
    out
}

fn level_points(s: &Series, scale: f64) -> Vec<(i64, f64)> {
    s.points.iter().map(|&(t, v)| (t, v * scale)).collect()
}

/// The tracks of process `r`: CPU %, memory, faults, switches, threads,
/// I/O, and each thread's on-CPU and run-queue wait (threads that never
/// ran are left out). `thread_name(tid, name when sampled)` names a
/// thread.
pub fn process_tracks(
    r: &ProcessResources,
    thread_name: impl Fn(u32, &str) -> String,
) -> Vec<Track> {
    let mut out = Vec::new();
    let p = Scope::Process;
    let mut push = |name: &str, tid: Option<u32>, mut points: Vec<(i64, f64)>| {
        // (Values out of range in a damaged file: no JSON number holds
        // them.)
        points.retain(|p| p.1.is_finite());
        if !points.is_empty() {
            out.push(Track {
                name: name.to_owned(),
                tid,
                points,
            });
        }
    };
    let rate = |keys: &[&str], scale: f64| -> Vec<(i64, f64)> {
        let parts: Vec<&Series> = keys.iter().filter_map(|k| r.get(p, k, "")).collect();
        if parts.len() < keys.len() {
            return Vec::new();
        }
        rate_points(&r.rates(&parts), scale)
    };
    push(
        "CPU %",
        None,
        rate(&[key::CPU_USER, key::CPU_SYSTEM], 100.0 / 1e9),
    );
    push("CPU system %", None, rate(&[key::CPU_SYSTEM], 100.0 / 1e9));
    if let Some(s) = r.get(p, key::RSS, "") {
        push("RSS (MiB)", None, level_points(s, 1.0 / MIB));
    }
    push(
        "page faults /s",
        None,
        rate(&[key::MINOR_FAULTS, key::MAJOR_FAULTS], 1.0),
    );
    push("major faults /s", None, rate(&[key::MAJOR_FAULTS], 1.0));
    push(
        "context switches /s",
        None,
        rate(&[key::CTX_VOLUNTARY, key::CTX_INVOLUNTARY], 1.0),
    );
    push(
        "involuntary switches /s",
        None,
        rate(&[key::CTX_INVOLUNTARY], 1.0),
    );
    if let Some(s) = r.get(p, key::THREADS, "") {
        push("threads", None, level_points(s, 1.0));
    }
    push(
        "disk read (MiB/s)",
        None,
        rate(&[key::READ_BYTES], 1.0 / MIB),
    );
    push(
        "disk write (MiB/s)",
        None,
        rate(&[key::WRITE_BYTES], 1.0 / MIB),
    );
    push(
        "read calls (MiB/s)",
        None,
        rate(&[key::READ_CHARS], 1.0 / MIB),
    );
    push(
        "write calls (MiB/s)",
        None,
        rate(&[key::WRITE_CHARS], 1.0 / MIB),
    );
    for ((scope, k, comm), s) in &r.series {
        let Scope::Thread { tid } = *scope else {
            continue;
        };
        // The sampler's own thread is recorded at keyframes only (its
        // time is the sampling's cost, in the summary): no rate track.
        if tid == r.sampler_tid {
            continue;
        }
        if k != key::ON_CPU || s.points.first().map(|p| p.1) == s.points.last().map(|p| p.1) {
            continue;
        }
        let name = thread_name(tid, comm);
        push(
            &format!("{name} on-CPU %"),
            Some(tid),
            rate_points(&r.rates(&[s]), 100.0 / 1e9),
        );
        if let Some(w) = r.get(*scope, key::RUN_WAIT, comm) {
            push(
                &format!("{name} run-queue wait %"),
                Some(tid),
                rate_points(&r.rates(&[w]), 100.0 / 1e9),
            );
        }
    }
    out
}

/// The host tracks a process recorded while it held its host's lock:
/// CPU (whole, iowait, each CPU), load, memory, each disk and each
/// network interface.
fn host_tracks_of(r: &ProcessResources) -> Vec<Track> {
    let h = Scope::Host;
    let mut out = Vec::new();
    let mut push = |name: String, mut points: Vec<(i64, f64)>| {
        points.retain(|p| p.1.is_finite());
        if !points.is_empty() {
            out.push(Track {
                name,
                tid: None,
                points,
            });
        }
    };
    let mut cpus: Vec<&str> = r
        .series
        .keys()
        .filter(|(s, k, _)| *s == h && k == key::HOST_CPU_BUSY)
        .map(|(_, _, i)| i.as_str())
        .collect();
    cpus.sort_by_key(|c| (c.len(), c.to_string()));
    for cpu in cpus {
        let (Some(busy), Some(idle)) = (
            r.get(h, key::HOST_CPU_BUSY, cpu),
            r.get(h, key::HOST_CPU_IDLE, cpu),
        ) else {
            continue;
        };
        let name = if cpu.is_empty() {
            "CPU %".to_owned()
        } else {
            format!("{cpu} %")
        };
        push(name, rate_points(&r.shares(busy, idle), 1.0));
        if cpu.is_empty() {
            if let Some(io) = r.get(h, key::HOST_CPU_IOWAIT, "") {
                // iowait's share of all CPU time (busy + idle).
                let all: Vec<Rate> = r.rates(&[busy, idle]);
                let wait = r.rates(&[io]);
                let pts: Vec<Rate> = all
                    .iter()
                    .filter_map(|&(t0, t1, a)| {
                        let w = wait.iter().find(|w| w.0 == t0)?.2;
                        (a > 0.0).then_some((t0, t1, 100.0 * w / a))
                    })
                    .collect();
                push("iowait %".to_owned(), rate_points(&pts, 1.0));
            }
        }
    }
    for (k, name, scale) in [
        (key::HOST_LOAD, "load (1 min)", 1.0),
        (key::HOST_RUNNABLE, "runnable tasks", 1.0),
        (key::HOST_MEM_USED, "memory used (MiB)", 1.0 / MIB),
        (key::HOST_MEM_AVAILABLE, "memory available (MiB)", 1.0 / MIB),
        (key::HOST_MEM_CACHED, "page cache (MiB)", 1.0 / MIB),
    ] {
        if let Some(s) = r.get(h, k, "") {
            push(name.to_owned(), level_points(s, scale));
        }
    }
    // Each disk's and each interface's tracks: (the key whose instances
    // they are, then per track its name after the instance's, the
    // cumulative keys whose rates it sums, and a scale).
    type PerInstance<'a> = (&'a str, &'a [(&'a str, &'a [&'a str], f64)]);
    let per_instance: [PerInstance; 2] = [
        (
            key::DISK_BUSY,
            &[
                ("read (MiB/s)", &[key::DISK_READ_BYTES], 1.0 / MIB),
                ("write (MiB/s)", &[key::DISK_WRITE_BYTES], 1.0 / MIB),
                ("IOPS", &[key::DISK_READS, key::DISK_WRITES], 1.0),
                ("util %", &[key::DISK_BUSY], 100.0 / 1e9),
            ],
        ),
        (
            key::NET_RX_BYTES,
            &[
                ("rx (MiB/s)", &[key::NET_RX_BYTES], 1.0 / MIB),
                ("tx (MiB/s)", &[key::NET_TX_BYTES], 1.0 / MIB),
                ("rx packets /s", &[key::NET_RX_PACKETS], 1.0),
                ("tx packets /s", &[key::NET_TX_PACKETS], 1.0),
            ],
        ),
    ];
    for (marker, tracks) in per_instance {
        for inst in instances(r, marker) {
            for &(name, keys, scale) in tracks {
                let parts: Option<Vec<&Series>> = keys.iter().map(|k| r.get(h, k, inst)).collect();
                if let Some(parts) = parts {
                    push(
                        format!("{inst} {name}"),
                        rate_points(&r.rates(&parts), scale),
                    );
                }
            }
        }
    }
    out
}

/// The instances (disks, interfaces) of host key `k`.
fn instances<'a>(r: &'a ProcessResources, k: &str) -> Vec<&'a str> {
    r.series
        .keys()
        .filter(|(s, key, _)| *s == Scope::Host && key == k)
        .map(|(_, _, i)| i.as_str())
        .collect()
}

/// A host of the session and its tracks, from every process that held
/// its lock (one after another).
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// Host identity (boot id or `MPPROF_HOST_ID`).
    pub host_id: String,
    /// Host name.
    pub hostname: String,
    /// Tracks, by name.
    pub tracks: Vec<Track>,
}

impl Host {
    /// The name of its "system" process: `system (hostname)`.
    pub fn label(&self) -> String {
        if self.hostname.is_empty() {
            "system".to_owned()
        } else {
            format!("system ({})", self.hostname)
        }
    }
}

/// The resource samples of a whole session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Per process (index as in [`Session::processes`]).
    pub processes: Vec<Option<ProcessResources>>,
    /// Hosts with host samples, in order of first appearance.
    pub hosts: Vec<Host>,
}

impl Resources {
    /// Reads the samples of every process of `session`.
    pub fn of(session: &Session) -> Resources {
        let processes: Vec<Option<ProcessResources>> =
            session.processes.iter().map(of_process).collect();
        let mut hosts: Vec<Host> = Vec::new();
        for (p, r) in session.processes.iter().zip(&processes) {
            let Some(r) = r else { continue };
            let tracks = host_tracks_of(r);
            if tracks.is_empty() {
                continue;
            }
            let (host_id, hostname) = p
                .file
                .info
                .as_ref()
                .map(|i| (i.host_id.clone(), i.hostname.clone()))
                .unwrap_or_default();
            let i = match hosts.iter().position(|h| h.host_id == host_id) {
                Some(i) => i,
                None => {
                    hosts.push(Host {
                        host_id,
                        hostname,
                        tracks: Vec::new(),
                    });
                    hosts.len() - 1
                }
            };
            for t in tracks {
                match hosts[i].tracks.iter_mut().find(|h| h.name == t.name) {
                    Some(h) => {
                        h.points.extend(t.points);
                        h.points.sort_by_key(|p| p.0);
                    }
                    None => hosts[i].tracks.push(t),
                }
            }
        }
        Resources { processes, hosts }
    }

    /// Whether any process has samples.
    pub fn is_empty(&self) -> bool {
        self.processes
            .iter()
            .all(|r| r.as_ref().is_none_or(|r| r.ticks.is_empty()))
    }
}

/// Statistics of a track's values over time: the mean weighted by how
/// long each value held (until the next point), and the peak.
pub fn mean_and_peak(points: &[(i64, f64)]) -> Option<(f64, f64)> {
    let peak = points.iter().map(|p| p.1).reduce(f64::max)?;
    let mut sum = 0.0;
    let mut len = 0.0;
    for w in points.windows(2) {
        let d = w[1].0 as f64 - w[0].0 as f64;
        sum += w[0].1 * d;
        len += d;
    }
    Some((if len > 0.0 { sum / len } else { points[0].1 }, peak))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(key: &str, points: &[(i64, f64)]) -> Series {
        Series {
            resource: Resource {
                site: 1,
                scope: Scope::Process,
                key: key.into(),
                instance: String::new(),
                unit: "ns".into(),
                cumulative: true,
            },
            points: points.to_vec(),
        }
    }

    #[test]
    fn rates_hold_unchanged_values_between_records() {
        // Samples at 0, 10, 20, 30 ms; the series changed at 0 and 30 only:
        // its whole increase falls in the last interval.
        let r = ProcessResources {
            ticks: vec![0, 10_000_000, 20_000_000, 30_000_000],
            ..Default::default()
        };
        let s = series(key::CPU_USER, &[(0, 0.0), (30_000_000, 5e6)]);
        let rates = r.rates(&[&s]);
        assert_eq!(
            rates,
            [
                (0, 10_000_000, 0.0),
                (10_000_000, 20_000_000, 0.0),
                (20_000_000, 30_000_000, 5e6 * 1e9 / 1e7)
            ]
        );
        assert_eq!(
            rate_points(&rates, 100.0 / 1e9),
            [
                (0, 0.0),
                (10_000_000, 0.0),
                (20_000_000, 50.0),
                (30_000_000, 0.0)
            ]
        );
        // Interpolated between points, clamped outside.
        assert_eq!(interpolate(&s, 15_000_000), 2.5e6);
        assert_eq!(interpolate(&s, -5), 0.0);
        assert_eq!(interpolate(&s, 99_000_000), 5e6);
    }

    #[test]
    fn mean_weights_by_time() {
        assert_eq!(
            mean_and_peak(&[(0, 100.0), (10, 0.0), (40, 0.0)]),
            Some((25.0, 100.0))
        );
        assert_eq!(mean_and_peak(&[]), None);
    }
}
