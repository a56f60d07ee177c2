//! Warnings about recording, on standard error.
//!
//! Each warning is one whole line, `mpprof: warning: <process> (pid N):
//! <message>`, built in a buffer on the stack and written with one
//! `write(2)`: lines from the many processes of a session never interleave,
//! each says which process it is about, and writing one allocates nothing
//! and takes no lock (the slow path that warns may run in a signal
//! handler). Control characters in a message are written as visible
//! escapes, so a name cannot break the line or drive the terminal.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest warning line, in bytes; longer ones are cut with `…`.
const MAX_LINE: usize = 1024;

/// Prints a warning about recording (see the module docs).
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = write!(line, "mpprof: warning: ");
    let mut comm = [0u8; 64];
    let name = process_name(&mut comm);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = write!(line, "{name} (pid {pid}): ");
    line.escaping = true;
    let _ = line.write_fmt(args);
    line.end();
}

/// [`warn`] the first time `once` is false, which it sets.
pub(crate) fn warn_once(once: &AtomicBool, args: fmt::Arguments<'_>) {
    // Relaxed: only that one thread warns.
    if !once.swap(true, Ordering::Relaxed) {
        warn(args);
    }
}

/// An OS error number, displayed without allocating (`io::Error`'s
/// `Display` allocates its message).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Errno(pub(crate) i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            libc::ENOSPC => "No space left on device",
            libc::EFBIG => "File too large (the file size limit, ulimit -f)",
            libc::EDQUOT => "Disk quota exceeded",
            libc::EIO => "Input/output error",
            libc::EROFS => "Read-only file system",
            libc::EBADF => "Bad file descriptor",
            libc::ENOMEM => "Cannot allocate memory",
            libc::EACCES => "Permission denied",
            libc::EPERM => "Operation not permitted",
            libc::EINTR => "Interrupted system call",
            _ => return write!(f, "os error {}", self.0),
        };
        write!(f, "{text} (os error {})", self.0)
    }
}

/// This process's name (`/proc/self/comm`, the main thread's), read with
/// plain system calls into `buf`; `?` when it cannot be read.
fn process_name(buf: &mut [u8; 64]) -> &str {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/comm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return "?";
    }
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    let n = usize::try_from(n).unwrap_or(0);
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("?").trim_end();
    if s.is_empty() {
        "?"
    } else {
        s
    }
}

/// A line of text in a fixed buffer.
struct Line {
    buf: [u8; MAX_LINE],
    len: usize,
    /// Write control characters as escapes (the message, not the prefix).
    escaping: bool,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; MAX_LINE],
            len: 0,
            escaping: false,
        }
    }

    fn push(&mut self, b: &[u8]) {
        // Room for "…\n" at the end.
        let room = MAX_LINE - 4 - self.len;
        let n = b.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    /// Ends the line and writes it.
    fn end(mut self) {
        if self.len >= MAX_LINE - 4 {
            self.buf[self.len..self.len + 3].copy_from_slice("…".as_bytes());
            self.len += 3;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        let mut done = 0;
        while done < self.len {
            // SAFETY: the range is inside the buffer.
            let n = unsafe { libc::write(2, self.buf[done..].as_ptr().cast(), self.len - done) };
            match n {
                n if n > 0 => done += n as usize,
                // EINTR: again; anything else: give up (nowhere to report).
                _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                _ => return,
            }
        }
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.escaping {
            self.push(s.as_bytes());
            return Ok(());
        }
        for c in s.chars() {
            if c.is_control() {
                let mut esc = [0u8; 16];
                let mut w = Cursor(&mut esc, 0);
                let _ = write!(w, "{}", c.escape_default());
                let n = w.1;
                self.push(&esc[..n]);
            } else {
                let mut b = [0u8; 4];
                self.push(c.encode_utf8(&mut b).as_bytes());
            }
        }
        Ok(())
    }
}

/// A `fmt::Write` into a byte array.
struct Cursor<'a>(&'a mut [u8], usize);

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        let n = b.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&b[..n]);
        self.1 += n;
        Ok(())
    }
}
