//! A client and a server process on tokio, talking over TCP on loopback.
//!
//! The client (the root process) starts the server with `mpprof::spawn`,
//! opens a few connections to it and sends requests on each; the server
//! hands every request to one of several worker tasks on a multi-thread
//! runtime. Both sides are instrumented the way a tokio service usually
//! is — `#[tracing::instrument]` with `mpprof::tracing_layer()` in the
//! registry, next to a `fmt` layer — mixed with `#[mpprof::instrument]`.
//! Every message is a `mpprof::Traced<T>` sent as one JSON line, so the
//! merged trace shows an arrow from each request's send to the worker task
//! that handles it, and from each response back to the client.
//!
//! ```text
//! cargo run --release --example tokio_service
//! ```

use std::error::Error;
use std::io::{self, BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mpprof::Traced;
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// Connections the client opens (the server accepts exactly this many).
const CONNECTIONS: u64 = 4;
/// Requests sent one after the other on each connection.
const REQUESTS_PER_CONNECTION: u64 = 8;
/// Worker tasks of the server.
const WORKERS: usize = 3;
/// Nothing waits longer than this: the example always ends by itself.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Debug)]
struct Req {
    conn: u64,
    n: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Resp {
    conn: u64,
    n: u64,
    primes: u64,
}

/// `tracing` into mpprof, and human-readable lines (INFO and up) on stderr.
fn init_tracing() {
    tracing_subscriber::registry()
        .with(mpprof::tracing_layer())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                .with_filter(LevelFilter::INFO),
        )
        .init();
}

fn timed_out(_: tokio::time::error::Elapsed) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no progress for 30 s")
}

// ---------------------------------------------------------------- server

/// Counts primes below `limit`: the real work of a request.
#[mpprof::instrument]
fn count_primes(limit: u64) -> u64 {
    (2..limit)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

/// A request on its way from a connection to a worker.
struct Job {
    req: Traced<Req>,
    reply: oneshot::Sender<Traced<Resp>>,
}

/// Handles one request on a worker task: the request's arrow ends here.
#[tracing::instrument(skip_all)]
async fn handle(req: Traced<Req>) -> Traced<Resp> {
    let req = req.receive();
    tracing::debug!("handling request");
    // Let other tasks run: the handler spans more than one poll.
    tokio::task::yield_now().await;
    let primes = count_primes(2_000 + req.n * 500);
    Traced::new(Resp {
        conn: req.conn,
        n: req.n,
        primes,
    })
}

/// A worker task: takes jobs from the shared queue until it is closed.
#[tracing::instrument(skip(jobs))]
async fn worker(id: usize, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) -> u64 {
    let mut served = 0;
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { return served };
        let resp = handle(job.req).await;
        let _ = job.reply.send(resp);
        served += 1;
    }
}

/// One client connection: reads request lines, queues them for the
/// workers, writes the responses back in order.
#[mpprof::instrument]
async fn connection(stream: TcpStream, jobs: mpsc::Sender<Job>) -> io::Result<()> {
    // Both directions traced (`mpprof::io::Traced`): each read and write a
    // slice, with the bytes queued on the socket as a counter track.
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let mut wr = mpprof::io::Traced::with_fd(wr, fd, "responses");
    let mut lines = BufReader::new(mpprof::io::Traced::with_fd(rd, fd, "requests")).lines();
    while let Some(line) = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .map_err(timed_out)??
    {
        let req: Traced<Req> = serde_json::from_str(&line)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { req, reply })
            .await
            .map_err(|_| io::Error::other("workers gone"))?;
        let resp = answer.await.map_err(io::Error::other)?;
        let mut out = serde_json::to_vec(&resp)?;
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
    Ok(())
}

/// The server: tells the client its port on stdout, serves exactly
/// [`CONNECTIONS`] connections, then stops.
#[tracing::instrument]
async fn server_main() -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let mut stdout = io::stdout();
    writeln!(stdout, "{}", listener.local_addr()?.port())?;
    stdout.flush()?;

    let (queue, jobs) = mpsc::channel(16);
    let jobs = Arc::new(Mutex::new(jobs));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| tokio::spawn(worker(id, jobs.clone())))
        .collect();
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
            .await
            .map_err(timed_out)??;
        conns.push(tokio::spawn(connection(stream, queue.clone())));
    }
    drop(queue);
    for c in conns {
        c.await.map_err(io::Error::other)??;
    }
    let mut served = 0;
    for w in workers {
        served += w.await.map_err(io::Error::other)?;
    }
    tracing::info!(served, "server done");
    Ok(())
}

fn serve() -> Result<(), Box<dyn Error>> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    rt.block_on(server_main())?;
    Ok(())
}

// ---------------------------------------------------------------- client

/// One request and its response: the request's arrow starts here, the
/// response's ends here.
#[mpprof::instrument]
async fn call(
    wr: &mut mpprof::io::Traced<OwnedWriteHalf>,
    lines: &mut Lines<BufReader<mpprof::io::Traced<OwnedReadHalf>>>,
    conn: u64,
    n: u64,
) -> io::Result<u64> {
    let mut out = serde_json::to_vec(&Traced::new(Req { conn, n }))?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .map_err(timed_out)??
        .ok_or_else(|| io::Error::other("server closed the connection"))?;
    let resp: Traced<Resp> = serde_json::from_str(&line)?;
    Ok(resp.receive().primes)
}

#[tracing::instrument]
async fn client_connection(port: u16, conn: u64) -> io::Result<u64> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let mut wr = mpprof::io::Traced::with_fd(wr, fd, "requests");
    let mut lines = BufReader::new(mpprof::io::Traced::with_fd(rd, fd, "responses")).lines();
    let mut total = 0;
    for n in 1..=REQUESTS_PER_CONNECTION {
        total += call(&mut wr, &mut lines, conn, n).await?;
    }
    Ok(total)
}

#[mpprof::instrument]
fn client() -> Result<u64, Box<dyn Error>> {
    let mut server = mpprof::spawn(
        Command::new(std::env::current_exe()?)
            .arg("--serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )?;
    let mut port = String::new();
    io::BufReader::new(server.stdout.take().expect("piped")).read_line(&mut port)?;
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|e| format!("server did not say its port ({e}): {port:?}"))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let total = rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|conn| tokio::spawn(client_connection(port, conn)))
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.map_err(io::Error::other)??;
        }
        io::Result::Ok(total)
    })?;
    drop(rt);
    let status = server.wait()?;
    if !status.success() {
        return Err(format!("server failed: {status}").into());
    }
    Ok(total)
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::args().any(|a| a == "--serve") {
        return serve();
    }
    let trace = mpprof_workspace::arg_value("--trace").unwrap_or_else(|| "trace.json".into());
    let session = mpprof::init()?;
    init_tracing();
    let dir = session.dir().map(|d| d.to_owned());
    let total = client()?;
    tracing::info!(
        requests = CONNECTIONS * REQUESTS_PER_CONNECTION,
        total,
        "client done"
    );
    drop(session);
    match dir {
        Some(dir) => mpprof_workspace::merge_and_report(&dir, trace.as_ref(), 10),
        None => Ok(()),
    }
}
