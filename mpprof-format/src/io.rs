//! Traced I/O calls (format 5): what `mpprof::io::Traced` records of each
//! read and write on a pipe, socket or file.
//!
//! - A [`Meta::Channel`](crate::Meta::Channel) entry describes a traced
//!   descriptor ([`Channel`]): its kind, the label the program gave it, and
//!   what identifies it across processes (a pipe's inode; a socket's local
//!   and peer addresses, or a Unix socket's inode and its peer's), so a
//!   reader can name the two ends of one pipe or connection as one channel.
//! - A [`kind::IO`](crate::kind::IO) record is one call: the word's
//!   timestamp is the call's end, its callsite field the channel id; the
//!   payload holds the call's start (process clock, like the word's) and
//!   [`Call`], packed by [`Call::pack`].
//! - The bytes waiting in the channel before each call (its queue depth)
//!   are ordinary counter records at the channel's `depth_site`, a counter
//!   callsite the file names.

use serde::{Deserialize, Serialize};

/// What a traced descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChannelKind {
    /// A pipe or FIFO.
    Pipe,
    /// A Unix-domain socket.
    Unix,
    /// A TCP socket.
    Tcp,
    /// A UDP socket.
    Udp,
    /// Another socket.
    Socket,
    /// A regular file.
    File,
    /// A terminal or other character device.
    Char,
    /// Anything else.
    Other,
}

impl ChannelKind {
    /// Lower-case name (`pipe`, `tcp`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Pipe => "pipe",
            ChannelKind::Unix => "unix",
            ChannelKind::Tcp => "tcp",
            ChannelKind::Udp => "udp",
            ChannelKind::Socket => "socket",
            ChannelKind::File => "file",
            ChannelKind::Char => "char",
            ChannelKind::Other => "other",
        }
    }
}

/// [`Meta::Channel`](crate::Meta::Channel): a traced descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Id in `IO` records' callsite field (from the callsite id space).
    pub id: u32,
    /// Counter callsite of its queue depth samples (0: none, a file).
    pub depth_site: u32,
    /// What it is.
    pub kind: ChannelKind,
    /// The program's name for it (`"worker stdout"`).
    pub label: String,
    /// Its descriptor when traced.
    pub fd: i32,
    /// `st_dev` and `st_ino` of the descriptor (a pipe's two ends share
    /// them; a socket's are its own).
    pub dev: u64,
    /// See `dev`.
    pub inode: u64,
    /// A socket's local address (`127.0.0.1:4000`, a Unix path), or empty.
    pub local: String,
    /// A socket's peer address, or empty.
    pub peer: String,
    /// A Unix socket's peer's inode (0: unknown).
    pub peer_inode: u64,
    /// A pipe's capacity, a socket's send buffer size, bytes (0: unknown).
    pub capacity: u64,
}

/// What a call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `read`.
    Read = 0,
    /// `write`.
    Write = 1,
}

/// One call, as packed in an `IO` record's second payload word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Read or write.
    pub op: Op,
    /// Bytes moved (saturated at `u32::MAX`).
    pub bytes: u32,
    /// The OS error number if it failed (0: it succeeded; `u16::MAX`: an
    /// error without one).
    pub errno: u16,
    /// It had to wait: nothing to read, or no room for what it wrote.
    pub blocked: bool,
}

impl Call {
    /// `bytes | op << 32 | blocked << 40 | errno << 48`.
    pub fn pack(self) -> u64 {
        u64::from(self.bytes)
            | (self.op as u64) << 32
            | u64::from(self.blocked) << 40
            | u64::from(self.errno) << 48
    }

    /// The call in `w`; `None` for an op this reader does not know.
    pub fn unpack(w: u64) -> Option<Call> {
        let op = match (w >> 32) as u8 {
            0 => Op::Read,
            1 => Op::Write,
            _ => return None,
        };
        Some(Call {
            op,
            bytes: w as u32,
            errno: (w >> 48) as u16,
            blocked: (w >> 40) & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_pack_and_unpack() {
        let c = Call {
            op: Op::Write,
            bytes: 65536,
            errno: 32,
            blocked: true,
        };
        assert_eq!(c.pack(), 65536 | 1 << 32 | 1 << 40 | 32 << 48);
        assert_eq!(Call::unpack(c.pack()), Some(c));
        assert_eq!(Call::unpack(7 << 32), None);
    }
}
