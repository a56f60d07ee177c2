//! `mpprof-merge`: the command-line edge of the merge library.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mpprof_merge::{analysis, write, Session};

/// Merge mpprof session directories into one clock-aligned trace.
#[derive(Parser, Debug)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Session directories (or single .mpb files) to merge.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output file; `-` for stdout. The format follows from the extension
    /// (.json: chrome, .pftrace: perfetto, .folded: folded, .svg: svg, .txt:
    /// summary, .prom: openmetrics, .fxprof.json: firefox, .otlp.pb: otlp)
    /// unless --format is given.
    #[arg(short, long, default_value = "trace.json")]
    output: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Rows per table in summaries.
    #[arg(long, default_value_t = 30)]
    limit: usize,
    /// Folded and SVG output: most frames of a stack shown below its
    /// process; deeper frames are folded into one marker frame that holds
    /// their time (like perf's --max-stack).
    #[arg(long, default_value_t = write::folded::DEFAULT_MAX_STACK as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_stack: u64,
    /// Also send every span to this OTLP/HTTP endpoint
    /// (`http://host:4318`: Jaeger, Grafana Tempo, an OpenTelemetry
    /// collector), in batches, retried with backoff.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// Folded and SVG output: stacks from the stack samples
    /// (MPPROF_SAMPLE_HZ), un-instrumented code included, under the spans
    /// that covered them; values are CPU time in µs.
    #[arg(long)]
    samples: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the cProfile-style summary (per process and whole tree).
    Summary {
        /// Session directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Rows per table.
        #[arg(long, default_value_t = 30)]
        limit: usize,
    },
    /// Run a command with recording on (its processes record into a fresh
    /// session directory; one that never calls `mpprof::init()` too), then
    /// merge the session, write the trace and print the summary's head.
    /// Exits with the command's exit status.
    Record {
        /// Trace file; the format follows from the extension as for a
        /// merge (.json, .pftrace, .folded, .svg, .txt).
        #[arg(short, long, default_value = "trace.json")]
        output: PathBuf,
        /// Session directory (made if missing); default a fresh
        /// ./mpprof-out/record-<unix time>-<pid>.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rows per table of the printed summary.
        #[arg(long, default_value_t = 15)]
        limit: usize,
        /// The command and its arguments, after `--`.
        #[arg(required = true, last = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Serve a trace once on 127.0.0.1 and open ui.perfetto.dev on it (as
    /// Perfetto's own open_trace_in_ui does): a session directory is merged
    /// to Perfetto protobuf first; a trace file is served as it is. Never
    /// listens beyond loopback; exits once the trace is fetched, or after
    /// --timeout seconds.
    Open {
        /// A session directory (or .mpb file), or a trace (.json,
        /// .pftrace).
        input: PathBuf,
        /// Print the URL instead of starting a browser.
        #[arg(long)]
        no_browser: bool,
        /// Port on 127.0.0.1. ui.perfetto.dev fetches traces only from
        /// port 9001 (its content security policy); 0 picks a free one.
        #[arg(long, default_value_t = 9001)]
        port: u16,
        /// Seconds to wait for the trace to be fetched.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Report per-process health; exit status 1 when the session is damaged.
    Check {
        /// Session directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Also fail (exit 1) on abrupt ends, lost events and unmatched flows.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Chrome trace event JSON (ui.perfetto.dev, chrome://tracing).
    Chrome,
    /// Perfetto protobuf.
    Perfetto,
    /// Folded stacks (inferno, flamegraph.pl).
    Folded,
    /// SVG flamegraph.
    Svg,
    /// Text summary.
    Summary,
    /// The summary as OpenMetrics text (Prometheus, promtool).
    Openmetrics,
    /// Firefox Profiler (profiler.firefox.com): samples, spans and I/O as
    /// markers.
    Firefox,
    /// OTLP spans (an ExportTraceServiceRequest, protobuf).
    Otlp,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        // The reader of our stdout went away (`| head`): nothing to report.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn open(inputs: &[PathBuf]) -> Result<Session> {
    let s = Session::open(inputs)?;
    for (p, e) in &s.unreadable {
        eprintln!("warning: skipping {}: {e}", p.display());
    }
    for (_, e) in &s.ignored {
        eprintln!("warning: ignoring {e}");
    }
    for n in &s.no_space {
        eprintln!("warning: {n}");
    }
    for p in &s.processes {
        for w in &p.file.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(s)
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Summary { inputs, limit }) => {
            let s = open(&inputs)?;
            let stdout = std::io::stdout();
            write::summary::write(&s, &mut stdout.lock(), limit)
                .context("cannot write the summary to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Record {
            output,
            dir,
            limit,
            command,
        }) => record(&output, dir, limit, &command),
        Some(Cmd::Open {
            input,
            no_browser,
            port,
            timeout,
        }) => open_in_ui(&input, no_browser, port, timeout),
        Some(Cmd::Check { inputs, strict }) => {
            let s = Session::open(&inputs)?;
            let h = analysis::check::check(&s);
            write::check::write_text(&h, &mut std::io::stdout().lock())
                .context("cannot write the report to standard output")?;
            let bad = h.damaged() || (strict && h.imperfect());
            Ok(if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        None => {
            let s = open(&cli.inputs)?;
            let opts = TraceOptions {
                output: cli.output,
                format: cli.format,
                limit: cli.limit,
                max_stack: cli.max_stack,
                samples: cli.samples,
            };
            write_trace(&s, &opts)?;
            if let Some(url) = &cli.otlp {
                let n = mpprof_merge::write::otlp::send(&s, url).map_err(anyhow::Error::msg)?;
                eprintln!("sent {n} spans to {url}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where and how [`write_trace`] writes.
struct TraceOptions {
    output: PathBuf,
    format: Option<Format>,
    limit: usize,
    max_stack: u64,
    samples: bool,
}

/// Writes the trace of `s` as `opts` say.
fn write_trace(s: &Session, opts: &TraceOptions) -> Result<()> {
    let cli = opts; // (the fields as the command line named them)
    let format = match cli.format {
        Some(f) => f,
        None => format_from_extension(&cli.output)?,
    };
    if cli.samples {
        if !matches!(format, Format::Folded | Format::Svg) {
            bail!("--samples applies to folded and SVG output (the Perfetto output has the samples as they are)");
        }
        if !mpprof_merge::profile::Profile::read(s).has_samples() {
            eprintln!("warning: the session has no stack samples (record with MPPROF_SAMPLE_HZ=1000): the flamegraph is empty");
        }
    }
    let mut out: Box<dyn Write> = if cli.output == Path::new("-") {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = File::create(&cli.output)
            .with_context(|| format!("cannot create {}", cli.output.display()))?;
        Box::new(BufWriter::with_capacity(1 << 20, f))
    };
    let incomplete = || {
        let to = if cli.output == Path::new("-") {
            "standard output".into()
        } else {
            cli.output.display().to_string()
        };
        format!("cannot write {to} (what was written is incomplete)")
    };
    let fold = write::folded::Options {
        max_stack: cli.max_stack as usize,
        samples: cli.samples,
    };
    let stats = with_progress(s, || match format {
        Format::Chrome => write::chrome::write(s, &mut out),
        Format::Summary => write::summary::write(s, &mut out, cli.limit).map(|s| s.stats),
        Format::Folded => write::folded::write_with(s, &mut out, fold),
        Format::Svg => write::folded::write_svg_with(s, &mut out, fold),
        Format::Perfetto => write::perfetto::write(s, &mut out),
        Format::Openmetrics => write::openmetrics::write(s, &mut out).map(|s| s.stats),
        Format::Firefox => write::firefox::write(s, &mut out),
        Format::Otlp => write::otlp::write(s, &mut out),
    })
    .with_context(incomplete)?;
    out.flush().with_context(incomplete)?;
    if format == Format::Chrome && stats.non_finite_counters > 0 {
        eprintln!(
                    "warning: {} counter samples are NaN or infinite, which JSON cannot hold: each is an instant with its value instead (the Perfetto format keeps them)",
                    stats.non_finite_counters
                );
    }
    if cli.output != Path::new("-") {
        eprintln!(
            "wrote {} ({} processes, {} events{})",
            cli.output.display(),
            s.processes.len(),
            stats.events,
            if stats.closed_spans > 0 {
                format!(", {} unfinished spans closed", stats.closed_spans)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// `record`: runs `command` with `MPPROF_DIR` set to a session directory
/// (made here: a child that never calls `init()` does not make it), waits
/// for it (an interrupt goes to the command; this process waits on, to
/// merge what it recorded), writes the trace, prints the summary's head
/// and where everything is, and exits with the command's status (128 +
/// signal when a signal ended it).
fn record(
    output: &Path,
    dir: Option<PathBuf>,
    limit: usize,
    command: &[std::ffi::OsString],
) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from("mpprof-out").join(format!("record-{secs}-{}", std::process::id()))
        }
    };
    make_private_dir(&dir)
        .with_context(|| format!("cannot make session directory {}", dir.display()))?;
    let dir = std::path::absolute(&dir)?;
    let (program, args) = command.split_first().context("no command to run")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("MPPROF_DIR", &dir)
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    // After the spawn: an ignored signal stays ignored across exec.
    ignore_interrupts();
    let status = child.wait().context("cannot wait for the command")?;
    let code = exit_code(&status);
    let s = match Session::open(&[&dir]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "mpprof-merge: {} recorded nothing ({e}); is it instrumented with mpprof (#[mpprof::instrument], or mpprof::init())?",
                program.to_string_lossy()
            );
            // No empty session left behind (fails, harmlessly, if not empty).
            let _ = std::fs::remove_dir(&dir);
            return Ok(ExitCode::from(code));
        }
    };
    let opts = TraceOptions {
        output: output.to_owned(),
        format: None,
        limit,
        max_stack: write::folded::DEFAULT_MAX_STACK as u64,
        samples: false,
    };
    write_trace(&s, &opts)?;
    write::summary::write(&s, &mut std::io::stdout().lock(), limit)
        .context("cannot write the summary to standard output")?;
    println!();
    println!("session: {}", dir.display());
    println!(
        "trace:   {} -- open it in https://ui.perfetto.dev",
        output.display()
    );
    if !status.success() {
        eprintln!("mpprof-merge: the command exited with {status}");
    }
    Ok(ExitCode::from(code))
}

/// `open`: the trace's bytes and name (a session is merged to Perfetto
/// protobuf), served once over HTTP on 127.0.0.1 with the CORS header
/// ui.perfetto.dev needs, and the UI's URL opened or printed.
fn open_in_ui(input: &Path, no_browser: bool, port: u16, timeout: u64) -> Result<ExitCode> {
    use std::io::{BufRead, BufReader};
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::{Duration, Instant};

    let is_trace = input.is_file()
        && matches!(
            input.extension().and_then(|e| e.to_str()),
            Some("json" | "pftrace" | "perfetto" | "pb")
        );
    let (name, bytes) = if is_trace {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| {
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            })
            .unwrap_or("trace.json")
            .to_owned();
        let bytes =
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
        (name, bytes)
    } else {
        let s = open(&[input.to_owned()])?;
        let mut bytes = Vec::new();
        write::perfetto::write(&s, &mut bytes).context("cannot write the trace")?;
        ("trace.pftrace".to_owned(), bytes)
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
        format!("cannot listen on 127.0.0.1:{port} (ui.perfetto.dev fetches from 9001 only; is another `open` running?)")
    })?;
    let port = listener.local_addr()?.port();
    let url = format!("https://ui.perfetto.dev/#!/?url=http://127.0.0.1:{port}/{name}");
    println!("{url}");
    let _ = std::io::stdout().flush();
    if !no_browser {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if std::process::Command::new(opener)
            .arg(&url)
            .spawn()
            .is_err()
        {
            eprintln!("mpprof-merge: no browser started ({opener} failed): open the URL above");
        }
    }
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let path = format!("/{name}");
    while Instant::now() < deadline {
        let (stream, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        // The rest of the request's head.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut stream = reader.into_inner();
        let mut words = request.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let cors = "Access-Control-Allow-Origin: https://ui.perfetto.dev\r\n";
        if method == "GET" && target == path {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{cors}Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&bytes)?;
            stream.flush()?;
            eprintln!("mpprof-merge: served {name} ({} bytes)", bytes.len());
            return Ok(ExitCode::SUCCESS);
        }
        let body = "not found";
        let _ = write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n{cors}Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
    bail!("nothing fetched the trace within {timeout} s; stopped serving it")
}

/// Makes `dir` (mode 0700 on unix; its parents as `mkdir -p`), or accepts
/// it if it exists.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// The exit status to forward: the command's code, or 128 + the signal
/// that ended it (as shells report it).
fn exit_code(status: &std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return (128 + sig).clamp(0, 255) as u8;
        }
    }
    status.code().map_or(1, |c| c.clamp(0, 255) as u8)
}

/// While the recorded command runs, an interrupt (Ctrl-C, sent to the
/// whole foreground group) is the command's to handle; this process keeps
/// waiting, to merge what was recorded.
fn ignore_interrupts() {
    #[cfg(unix)]
    // SAFETY: setting SIGINT's disposition to "ignore" has no
    // preconditions; no handler runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

fn format_from_extension(p: &Path) -> Result<Format> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".fxprof.json") || name.ends_with(".fxprof") {
        return Ok(Format::Firefox);
    }
    if name.ends_with(".otlp.pb") || name.ends_with(".otlp") {
        return Ok(Format::Otlp);
    }
    match p.extension().and_then(|e| e.to_str()) {
        Some("json") => Ok(Format::Chrome),
        Some("txt") => Ok(Format::Summary),
        Some("folded") => Ok(Format::Folded),
        Some("svg") => Ok(Format::Svg),
        Some("pftrace" | "perfetto" | "pb") => Ok(Format::Perfetto),
        Some("prom" | "om") => Ok(Format::Openmetrics),
        _ if p == Path::new("-") => Ok(Format::Chrome),
        _ => bail!(
            "cannot tell the output format from {}; give --format",
            p.display()
        ),
    }
}

/// Sessions with more records than this get a progress bar (on a terminal).
const PROGRESS_MIN_RECORDS: u64 = 5_000_000;

/// Runs `f` (a writer), drawing a progress bar on stderr meanwhile when
/// stderr is a terminal and the session is large; quiet otherwise.
fn with_progress<T>(s: &Session, f: impl FnOnce() -> T) -> T {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let total = s.total_records();
    if total <= PROGRESS_MIN_RECORDS || !std::io::stderr().is_terminal() {
        return f();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let bar = scope.spawn(|| {
            let t0 = Instant::now();
            // Not locked across the sleeps: the writer may print warnings.
            let mut stderr = std::io::stderr();
            while !done.load(Ordering::Relaxed) {
                let n = s.events_merged().min(total);
                let filled = (n as u128 * 30 / total as u128) as usize;
                let _ = write!(
                    stderr,
                    "\r[{}{}] {:3}%  {:.1}M / {:.1}M events  {:.0} s",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    n as u128 * 100 / total as u128,
                    n as f64 / 1e6,
                    total as f64 / 1e6,
                    t0.elapsed().as_secs_f64()
                );
                let _ = stderr.flush();
                std::thread::park_timeout(Duration::from_millis(200));
            }
            // Erase the bar.
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        bar.thread().unpark();
        r
    })
}
