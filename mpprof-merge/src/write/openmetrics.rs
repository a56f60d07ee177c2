//! The summary as OpenMetrics text (`-o metrics.prom`): what a Prometheus
//! scrape or `promtool` reads. Per function and process: calls, cumulative
//! and self time; per process: its wall time, lost events and, where it
//! was sampled, its resource totals (CPU time, peak RSS, faults, context
//! switches, bytes read and written, threads).
//!
//! Each family is written whole (its `# TYPE`, `# UNIT` and `# HELP`, then
//! every sample), counters' samples end in `_total`, names with a unit end
//! in it, label values are escaped (`\\`, `\"`, `\n`), and the text ends
//! with `# EOF`.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::analysis::summary::{self, Summary};
use crate::trace::Session;

/// One metric family being built.
struct Family {
    name: &'static str,
    kind: &'static str,
    unit: &'static str,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(
        name: &'static str,
        kind: &'static str,
        unit: &'static str,
        help: &'static str,
    ) -> Family {
        Family {
            name,
            kind,
            unit,
            help,
            samples: String::new(),
        }
    }

    /// A sample with `labels` (name, value) and `value`.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let suffix = if self.kind == "counter" { "_total" } else { "" };
        let _ = write!(self.samples, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.samples.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.samples.push(',');
                }
                let _ = write!(self.samples, "{k}=\"{}\"", escape(v));
            }
            self.samples.push('}');
        }
        let _ = writeln!(self.samples, " {}", number(value));
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.samples.is_empty() {
            return Ok(());
        }
        writeln!(out, "# TYPE {} {}", self.name, self.kind)?;
        if !self.unit.is_empty() {
            writeln!(out, "# UNIT {} {}", self.name, self.unit)?;
        }
        writeln!(out, "# HELP {} {}", self.name, self.help)?;
        out.write_all(self.samples.as_bytes())
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A number as OpenMetrics writes it (integers without a fraction).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Computes the summary of `session` and writes it as OpenMetrics.
pub fn write(session: &Session, out: &mut dyn Write) -> io::Result<Summary> {
    let s = summary::compute(session);
    write_summary(&s, session, out)?;
    Ok(s)
}

/// Writes `s` (the summary of `session`) as OpenMetrics.
pub fn write_summary(s: &Summary, session: &Session, out: &mut dyn Write) -> io::Result<()> {
    let mut calls = Family::new(
        "mpprof_function_calls",
        "counter",
        "",
        "Calls of an instrumented function (recursive ones included).",
    );
    let mut cum = Family::new(
        "mpprof_function_seconds",
        "counter",
        "seconds",
        "Time in an instrumented function, callees included, recursion counted once.",
    );
    let mut own = Family::new(
        "mpprof_function_self_seconds",
        "counter",
        "seconds",
        "Time in an instrumented function itself, callees excluded.",
    );
    let mut on_cpu = Family::new(
        "mpprof_function_on_cpu_seconds",
        "counter",
        "seconds",
        "Of the function's time, the part its thread was on a CPU (from resource samples).",
    );
    let mut wall = Family::new(
        "mpprof_process_wall_seconds",
        "gauge",
        "seconds",
        "Time from a process's first to its last recorded event.",
    );
    let mut lost = Family::new(
        "mpprof_process_lost_events",
        "counter",
        "",
        "Events a process could not record (budget, disk, nesting).",
    );
    let mut cpu = Family::new(
        "mpprof_process_cpu_seconds",
        "counter",
        "seconds",
        "CPU time of a process over its life, by mode.",
    );
    let mut rss = Family::new(
        "mpprof_process_peak_rss_bytes",
        "gauge",
        "bytes",
        "Peak resident set size of a process.",
    );
    let mut faults = Family::new(
        "mpprof_process_page_faults",
        "counter",
        "",
        "Page faults of a process, by kind.",
    );
    let mut switches = Family::new(
        "mpprof_process_context_switches",
        "counter",
        "",
        "Context switches of a process, by kind.",
    );
    let mut io_bytes = Family::new(
        "mpprof_process_io_bytes",
        "counter",
        "bytes",
        "Bytes a process read and wrote: from storage, and through read/write calls.",
    );
    let mut threads = Family::new(
        "mpprof_process_threads",
        "gauge",
        "",
        "Most threads a process had at once.",
    );
    for (p, ps) in session.processes.iter().zip(&s.processes) {
        let name = p
            .file
            .info
            .as_ref()
            .and_then(|i| i.exe.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("?")
            .to_owned();
        let pid = p.file.pid.to_string();
        let proc_labels = [("process", name.as_str()), ("pid", pid.as_str())];
        wall.sample(&proc_labels, ps.wall_ns as f64 / 1e9);
        lost.sample(&proc_labels, p.file.lost_events as f64);
        for (k, f) in &ps.funcs {
            let line = k.line.to_string();
            let labels = [
                ("process", name.as_str()),
                ("pid", pid.as_str()),
                ("function", k.label.as_str()),
                ("file", k.file.as_str()),
                ("line", line.as_str()),
            ];
            calls.sample(&labels, f.ncalls as f64);
            cum.sample(&labels, f.cumtime_ns as f64 / 1e9);
            own.sample(&labels, f.tottime_ns as f64 / 1e9);
            if f.sampled_ns > 0 {
                on_cpu.sample(&labels, f.on_cpu_ns as f64 / 1e9);
            }
        }
        let Some(r) = &ps.resources else { continue };
        let with = |extra: (&'static str, &'static str)| [proc_labels[0], proc_labels[1], extra];
        if let Some(v) = r.user_ns {
            cpu.sample(&with(("mode", "user")), v / 1e9);
        }
        if let Some(v) = r.system_ns {
            cpu.sample(&with(("mode", "system")), v / 1e9);
        }
        if let Some(v) = r.peak_rss {
            rss.sample(&proc_labels, v);
        }
        if let Some((minor, major)) = r.faults {
            faults.sample(&with(("kind", "minor")), minor);
            faults.sample(&with(("kind", "major")), major);
        }
        if let Some((vol, invol)) = r.switches {
            switches.sample(&with(("kind", "voluntary")), vol);
            switches.sample(&with(("kind", "involuntary")), invol);
        }
        for (layer, v) in [("storage", r.storage), ("calls", r.calls)] {
            if let Some((read, written)) = v {
                let l = |d: &'static str| {
                    [
                        proc_labels[0],
                        proc_labels[1],
                        ("direction", d),
                        ("layer", layer),
                    ]
                };
                io_bytes.sample(&l("read"), read);
                io_bytes.sample(&l("write"), written);
            }
        }
        if let Some(v) = r.threads {
            threads.sample(&proc_labels, v);
        }
    }
    for f in [
        &calls, &cum, &own, &on_cpu, &wall, &lost, &cpu, &rss, &faults, &switches, &io_bytes,
        &threads,
    ] {
        f.write(out)?;
    }
    writeln!(out, "# EOF")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        let mut f = Family::new("x_seconds", "counter", "seconds", "h");
        f.sample(&[("a", "b\"")], 1.5);
        let mut out = Vec::new();
        f.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# TYPE x_seconds counter\n# UNIT x_seconds seconds\n# HELP x_seconds h\nx_seconds_total{a=\"b\\\"\"} 1.5\n"
        );
    }
}
