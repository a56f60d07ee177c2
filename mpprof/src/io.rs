//! Traced I/O: each read and write on a pipe, socket or file as a slice on
//! the calling thread's track, with its bytes, its error and whether it had
//! to wait, and the channel's queue depth as a counter track.
//!
//! ```no_run
//! use std::io::Write;
//! let child = std::process::Command::new("cat")
//!     .stdin(std::process::Stdio::piped())
//!     .spawn()
//!     .unwrap();
//! let mut to_cat = mpprof::io::Traced::new(child.stdin.unwrap(), "cat stdin");
//! to_cat.write_all(b"hello").unwrap();
//! ```
//!
//! (Not to be confused with [`mpprof::Traced`](crate::Traced), which
//! carries a causality id inside a message.)
//!
//! With recording off a traced call costs one relaxed load and a branch
//! over the bare call. With it on, per call: an `ioctl` for the bytes
//! waiting (pipes and sockets: `FIONREAD`, or `SIOCOUTQ` for a socket's
//! writes), two timestamps, and two records (the queue depth, and the call:
//! format 5's `IO` record, see `mpprof_format::io`). The descriptor is
//! described once per recording file (`Meta::Channel`): its kind, its
//! label, and what identifies it across processes (a pipe's inode, a
//! socket's addresses), so the merge names both ends of one pipe or
//! connection as one channel. Errors reach the caller unchanged.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::callsite;
use crate::clock;
use crate::format::io::{Call, Op};
use crate::format::{kind, Channel, ChannelKind, Clipped, MetaRef, SiteKind, MAX_NAME};
use crate::record;
use crate::session::{self, OFF};

/// A reader or writer whose calls are recorded (see the module docs).
pub struct Traced<S> {
    inner: S,
    ch: Box<Described>,
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    /// An async read or write that returned `Pending`: the operation, when
    /// its first poll began and the bytes then queued (its slice spans the
    /// wait, from that first poll to the one that is ready).
    pending: Option<(Op, u64, Option<u64>)>,
}

/// The channel's description and where it was last written.
struct Described {
    channel: Channel,
    /// Epoch of the file the description was written to (0: none yet).
    registered: AtomicU32,
}

impl<S: AsRawFd> Traced<S> {
    /// Traces `inner` under `label` (`"worker stdout"`): looks at what its
    /// descriptor is (a few system calls, once).
    pub fn new(inner: S, label: &str) -> Traced<S> {
        let fd = inner.as_raw_fd();
        Traced::with_fd(inner, fd, label)
    }
}

impl<S> Traced<S> {
    /// Traces `inner`, whose calls go to descriptor `fd`, under `label`:
    /// for a stream that does not give its descriptor (tokio's split
    /// halves: `Traced::with_fd(rd, stream.as_raw_fd(), ...)` before
    /// `into_split`). `fd` must stay `inner`'s for as long as it lives.
    pub fn with_fd(inner: S, fd: RawFd, label: &str) -> Traced<S> {
        let channel = describe(fd, label);
        Traced {
            inner,
            ch: Box::new(Described {
                channel,
                registered: AtomicU32::new(0),
            }),
            pending: None,
        }
    }
}

impl<S> Traced<S> {
    /// The wrapped reader or writer.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped reader or writer (calls made on it directly are not
    /// traced).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps it.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The channel's kind (`pipe`, `tcp`, ...).
    pub fn kind(&self) -> &'static str {
        self.ch.channel.kind.name()
    }

    /// Records one call `f` of `op` moving at most `len` bytes.
    #[inline]
    fn call(
        &mut self,
        op: Op,
        len: usize,
        f: impl FnOnce(&mut S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if record::state() == OFF {
            return f(&mut self.inner);
        }
        self.traced(op, len, f)
    }

    #[inline(never)]
    fn traced(
        &mut self,
        op: Op,
        len: usize,
        f: impl FnOnce(&mut S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let (start, queued) = self.begin(op);
        let r = f(&mut self.inner);
        self.end(op, len, start, queued, false, &r);
        r
    }

    /// Before a call: the queue depth (recorded), and the start time.
    fn begin(&self, op: Op) -> (u64, Option<u64>) {
        let ch = &self.ch.channel;
        let queued = queued(ch, op);
        if let Some(q) = queued {
            record::counter_id(ch.depth_site, record::CounterValue::UInt(q));
        }
        (clock::now(), queued)
    }

    /// After a call of `op` for `len` bytes that began at `start` with
    /// `queued` bytes waiting: its record. `waited`: an async call that was
    /// pending first.
    fn end(
        &self,
        op: Op,
        len: usize,
        start: u64,
        queued: Option<u64>,
        waited: bool,
        r: &io::Result<usize>,
    ) {
        let ch = &self.ch.channel;
        let (bytes, errno) = match r {
            Ok(n) => ((*n).min(u32::MAX as usize) as u32, 0),
            Err(e) => (
                0,
                e.raw_os_error()
                    .map_or(u16::MAX, |n| n.clamp(1, 0xfffe) as u16),
            ),
        };
        let would_block = matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        let blocked = waited
            || !would_block
                && match (op, queued) {
                    (Op::Read, Some(q)) => q == 0,
                    (Op::Write, Some(q)) => ch.capacity > 0 && q + len as u64 > ch.capacity,
                    _ => false,
                };
        let call = Call {
            op,
            bytes,
            errno,
            blocked,
        };
        record::record_with_payload(ch.id, kind::IO, [start, call.pack()]);
        self.register();
    }

    /// Writes the channel's description into the current file, once per
    /// file (after the first record, which starts recording if it had not
    /// started yet).
    fn register(&self) {
        let s = record::state();
        if self.ch.registered.load(Ordering::Relaxed) == s {
            return;
        }
        let Some(r) = session::recorder_for(s) else {
            return;
        };
        let ch = &self.ch.channel;
        let name = format!("queued bytes: {} {}", ch.kind.name(), ch.label);
        let written = record::inside(|| {
            r.chunks.using(|c| {
                if ch.depth_site != 0 {
                    c.write_meta(&MetaRef::Callsite {
                        id: ch.depth_site,
                        kind: SiteKind::Counter,
                        name: Clipped::new(&name, MAX_NAME),
                        path: Clipped::whole("mpprof::io"),
                        file: Clipped::whole(""),
                        line: 0,
                    });
                }
                c.write_meta(&MetaRef::Channel(ch));
            })
        });
        if written.is_some() {
            self.ch.registered.store(s, Ordering::Relaxed);
        }
    }
}

impl<S: Read> Read for Traced<S> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.call(Op::Read, len, |s| s.read(buf))
    }

    // Recording off: the stream's own (a `File`'s is specialised); on,
    // `read` in a loop, so each system call is a call of its own.
    #[inline]
    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        if record::state() == OFF {
            return self.inner.read_exact(buf);
        }
        while !buf.is_empty() {
            match self.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<S: Write> Write for Traced<S> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.call(Op::Write, buf.len(), |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    // As `read_exact`.
    #[inline]
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if record::state() == OFF {
            return self.inner.write_all(buf);
        }
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(feature = "tokio")]
mod tokio_io {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    impl<S: Unpin> Traced<S> {
        /// One poll of an async call: a call that is ready is recorded
        /// from its first poll (the wait included); a pending one is not
        /// recorded yet.
        fn poll_traced<T>(
            &mut self,
            op: Op,
            len: usize,
            poll: impl FnOnce(&mut S) -> Poll<io::Result<T>>,
            moved: impl FnOnce(&T) -> usize,
        ) -> Poll<io::Result<T>> {
            if record::state() == OFF {
                self.pending = None;
                return poll(&mut self.inner);
            }
            let (start, queued, waited) = match self.pending.take() {
                Some((o, start, queued)) if o == op => (start, queued, true),
                _ => {
                    let (start, queued) = self.begin(op);
                    (start, queued, false)
                }
            };
            match poll(&mut self.inner) {
                Poll::Pending => {
                    self.pending = Some((op, start, queued));
                    Poll::Pending
                }
                Poll::Ready(r) => {
                    // What the record needs: the bytes, or the error's
                    // number (or kind).
                    let n = match &r {
                        Ok(t) => Ok(moved(t)),
                        Err(e) => Err(e.raw_os_error().map_or_else(
                            || io::Error::from(e.kind()),
                            io::Error::from_raw_os_error,
                        )),
                    };
                    self.end(op, len, start, queued, waited, &n);
                    Poll::Ready(r)
                }
            }
        }
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Traced<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let len = buf.remaining();
            let filled = std::cell::Cell::new(before);
            let r = this.poll_traced(
                Op::Read,
                len,
                |s| {
                    let r = Pin::new(s).poll_read(cx, buf);
                    filled.set(buf.filled().len());
                    r
                },
                |_| filled.get() - before,
            );
            r
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Traced<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.poll_traced(
                Op::Write,
                buf.len(),
                |s| Pin::new(s).poll_write(cx, buf),
                |&n| n,
            )
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }
}

impl<S: AsRawFd> AsRawFd for Traced<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<S> std::fmt::Debug for Traced<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced")
            .field("kind", &self.ch.channel.kind)
            .field("label", &self.ch.channel.label)
            .finish_non_exhaustive()
    }
}

/// Bytes waiting in the channel before a call: to be read (pipes and
/// sockets: `FIONREAD`), or for a socket's write, not yet sent
/// (`SIOCOUTQ`; a pipe's `FIONREAD` counts both). `None` for a file or
/// when the kernel does not say.
fn queued(ch: &Channel, op: Op) -> Option<u64> {
    let req = match (ch.kind, op) {
        (ChannelKind::Pipe, _) | (_, Op::Read) => libc::FIONREAD,
        (_, Op::Write) => libc::TIOCOUTQ, // SIOCOUTQ on a socket
    };
    if !matches!(
        ch.kind,
        ChannelKind::Pipe
            | ChannelKind::Unix
            | ChannelKind::Tcp
            | ChannelKind::Udp
            | ChannelKind::Socket
    ) {
        return None;
    }
    let mut n: libc::c_int = 0;
    // SAFETY: the request writes one int.
    (unsafe { libc::ioctl(ch.fd, req, &mut n) } == 0).then_some(n.max(0) as u64)
}

/// What descriptor `fd` is.
fn describe(fd: RawFd, label: &str) -> Channel {
    let mut ch = Channel {
        id: callsite::fresh_id().unwrap_or(0),
        depth_site: 0,
        kind: ChannelKind::Other,
        label: label.to_owned(),
        fd,
        dev: 0,
        inode: 0,
        local: String::new(),
        peer: String::new(),
        peer_inode: 0,
        capacity: 0,
    };
    // SAFETY: fstat writes the stat it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return ch;
    }
    ch.dev = st.st_dev;
    ch.inode = st.st_ino;
    ch.kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => ChannelKind::Pipe,
        libc::S_IFSOCK => socket_kind(fd),
        libc::S_IFREG => ChannelKind::File,
        libc::S_IFCHR => ChannelKind::Char,
        _ => ChannelKind::Other,
    };
    match ch.kind {
        ChannelKind::Pipe => {
            // SAFETY: F_GETPIPE_SZ takes no argument.
            let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
            ch.capacity = n.max(0) as u64;
        }
        ChannelKind::Unix | ChannelKind::Tcp | ChannelKind::Udp | ChannelKind::Socket => {
            ch.capacity = sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(0) as u64;
            ch.local = address(fd, libc::getsockname);
            ch.peer = address(fd, libc::getpeername);
            if ch.kind == ChannelKind::Unix {
                ch.peer_inode = unix_peer_inode(ch.inode).unwrap_or(0);
            }
        }
        _ => {}
    }
    if matches!(
        ch.kind,
        ChannelKind::Pipe
            | ChannelKind::Unix
            | ChannelKind::Tcp
            | ChannelKind::Udp
            | ChannelKind::Socket
    ) {
        ch.depth_site = callsite::fresh_id().unwrap_or(0);
    }
    ch
}

fn socket_kind(fd: RawFd) -> ChannelKind {
    let domain = sockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let ty = sockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    match (domain, ty) {
        (Some(libc::AF_UNIX), _) => ChannelKind::Unix,
        (Some(libc::AF_INET | libc::AF_INET6), Some(libc::SOCK_STREAM)) => ChannelKind::Tcp,
        (Some(libc::AF_INET | libc::AF_INET6), Some(libc::SOCK_DGRAM)) => ChannelKind::Udp,
        _ => ChannelKind::Socket,
    }
}

fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option is an int, written into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// A socket's own or its peer's address as text (`127.0.0.1:4000`,
/// `[::1]:4000`, a Unix path, `@abstract`), or empty.
fn address(fd: RawFd, f: NameFn) -> String {
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the call writes at most `len` bytes of address.
    if unsafe { f(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) } != 0 {
        return String::new();
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            format!("{ip}:{}", u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            format!("[{ip}]:{}", u16::from_be(a.sin6_port))
        }
        libc::AF_UNIX => {
            // SAFETY: the family says it is a sockaddr_un.
            let a = unsafe { &*(&ss as *const _ as *const libc::sockaddr_un) };
            let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
            let path: Vec<u8> = a.sun_path[..n.min(a.sun_path.len())]
                .iter()
                .map(|&c| c as u8)
                .collect();
            match path.first() {
                None => String::new(),
                Some(0) => format!("@{}", String::from_utf8_lossy(&path[1..])),
                Some(_) => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    String::from_utf8_lossy(&path[..end]).into_owned()
                }
            }
        }
        _ => String::new(),
    }
}

/// The inode of the peer of the Unix socket with inode `ino`, from the
/// kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `UNIX_DIAG_PEER`, as
/// `ss -x` shows it): the two ends of a `socketpair` name each other so.
fn unix_peer_inode(ino: u64) -> Option<u64> {
    // struct nlmsghdr + struct unix_diag_req.
    #[repr(C)]
    struct Req {
        len: u32,
        ty: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        family: u8,
        protocol: u8,
        pad: u16,
        states: u32,
        ino: u32,
        show: u32,
        cookie: [u32; 2],
    }
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_PEER: u16 = 2;
    let req = Req {
        len: std::mem::size_of::<Req>() as u32,
        ty: SOCK_DIAG_BY_FAMILY,
        flags: libc::NLM_F_REQUEST as u16,
        seq: 1,
        pid: 0,
        family: libc::AF_UNIX as u8,
        protocol: 0,
        pad: 0,
        states: u32::MAX,
        ino: u32::try_from(ino).ok()?,
        show: UDIAG_SHOW_PEER,
        cookie: [u32::MAX; 2],
    };
    // SAFETY: a socket call with constant arguments; the descriptor is
    // closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 1024];
    // SAFETY: sends the request's bytes and receives into `buf`.
    let n = unsafe {
        if libc::send(
            fd,
            &req as *const Req as *const libc::c_void,
            req.len as usize,
            0,
        ) < 0
        {
            -1
        } else {
            libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)
        }
    };
    // SAFETY: the descriptor is ours.
    unsafe { libc::close(fd) };
    let msg = buf.get(..usize::try_from(n).ok()?)?;
    // nlmsghdr (16 bytes), then unix_diag_msg (16 bytes), then attributes.
    let ty = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if ty != SOCK_DIAG_BY_FAMILY {
        return None; // NLMSG_ERROR: no such socket, or not allowed
    }
    let mut at = 32;
    while let Some(hdr) = msg.get(at..at + 4) {
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]);
        if len < 4 {
            break;
        }
        if kind == UNIX_DIAG_PEER {
            let v = msg.get(at + 4..at + 8)?;
            return Some(u64::from(u32::from_ne_bytes(v.try_into().ok()?)));
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socketpair_s_ends_name_each_other() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (ca, cb) = (describe(a.as_raw_fd(), "a"), describe(b.as_raw_fd(), "b"));
        assert_eq!((ca.kind, cb.kind), (ChannelKind::Unix, ChannelKind::Unix));
        assert_eq!(ca.peer_inode, cb.inode, "{ca:?} {cb:?}");
        assert_eq!(cb.peer_inode, ca.inode);
        assert!(ca.capacity > 0 && ca.depth_site != 0);
    }

    #[test]
    fn pipes_tcp_and_files_are_told_apart() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors, closed below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (r, w) = (describe(fds[0], "r"), describe(fds[1], "w"));
        assert_eq!((r.kind, w.kind), (ChannelKind::Pipe, ChannelKind::Pipe));
        assert_eq!((r.dev, r.inode), (w.dev, w.inode));
        assert_eq!(r.capacity, 65536);
        // SAFETY: closing the two descriptors just made.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let (cc, sc) = (describe(c.as_raw_fd(), "c"), describe(s.as_raw_fd(), "s"));
        assert_eq!(cc.kind, ChannelKind::Tcp);
        assert_eq!(
            (cc.local.as_str(), cc.peer.as_str()),
            (sc.peer.as_str(), sc.local.as_str())
        );
        assert!(cc.peer.starts_with("127.0.0.1:"));
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fc = describe(f.as_raw_fd(), "f");
        assert_eq!((fc.kind, fc.depth_site), (ChannelKind::File, 0));
    }
}
