//! Processes that talk over pipes, with a flow token in every message: the
//! parent sends requests to a worker process over its stdin, the worker
//! answers on its stdout. Each message is a `mpprof::Traced<T>` (serialized
//! as one JSON line), so the trace shows an arrow from every send to its
//! receive, in both directions.
//!
//! ```text
//! cargo run --release --example pipeline
//! ```

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use mpprof::Traced;
use serde::{Deserialize, Serialize};

const REQUESTS: u64 = 20;

#[derive(Serialize, Deserialize, Debug)]
struct Request {
    n: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Response {
    n: u64,
    primes: u64,
}

/// Counts primes below `n * 2000`: real work, a little more per request.
#[mpprof::instrument]
fn count_primes(limit: u64) -> u64 {
    (2..limit)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

#[mpprof::instrument]
fn handle(req: Request) -> Response {
    Response {
        n: req.n,
        primes: count_primes(req.n * 2000),
    }
}

/// The worker: one request per line on stdin, one response per line on
/// stdout. Both pipes are traced (`mpprof::io::Traced`, under the buffers:
/// a call per message): the trace shows each read and write, how long the
/// worker waited for its next request, and the bytes queued in each pipe.
#[mpprof::instrument]
fn serve() -> std::io::Result<()> {
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut out = BufWriter::new(mpprof::io::Traced::new(stdout, "responses"));
    for line in BufReader::new(mpprof::io::Traced::new(stdin, "requests")).lines() {
        let msg: Traced<Request> = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        let resp = handle(msg.receive());
        serde_json::to_writer(&mut out, &Traced::new(resp)).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

#[mpprof::instrument]
fn client() -> std::io::Result<u64> {
    let exe = std::env::current_exe()?;
    let mut child = mpprof::spawn(
        Command::new(exe)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )?;
    let mut to_worker = BufWriter::new(mpprof::io::Traced::new(
        child.stdin.take().expect("piped"),
        "requests",
    ));
    let mut from_worker = BufReader::new(mpprof::io::Traced::new(
        child.stdout.take().expect("piped"),
        "responses",
    ))
    .lines();
    let mut total = 0;
    for n in 1..=REQUESTS {
        let _g = mpprof::scope!("request");
        serde_json::to_writer(&mut to_worker, &Traced::new(Request { n }))
            .map_err(std::io::Error::other)?;
        to_worker.write_all(b"\n")?;
        to_worker.flush()?;
        let line = from_worker
            .next()
            .ok_or_else(|| std::io::Error::other("worker closed its stdout"))??;
        let resp: Traced<Response> = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        let resp = resp.receive();
        mpprof::counter!("primes", resp.primes);
        total += resp.primes;
    }
    drop(to_worker);
    child.wait()?;
    Ok(total)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--serve") {
        return Ok(serve()?);
    }
    let trace = mpprof_workspace::arg_value("--trace").unwrap_or_else(|| "trace.json".into());
    let session = mpprof::init()?;
    let dir = session.dir().map(|d| d.to_owned());
    let total = client()?;
    eprintln!("{REQUESTS} requests answered, {total} primes counted");
    drop(session);
    match dir {
        Some(dir) => mpprof_workspace::merge_and_report(&dir, trace.as_ref(), 10),
        None => Ok(()),
    }
}
