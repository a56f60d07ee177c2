//! Reading and parsing the `/proc` files the resource sampler
//! (`session/sampler.rs`) reads. The parsers
//! are plain functions over the file's text (tested here on the kernel's
//! formats); [`ProcFile`] keeps a file open and re-reads it with `pread`
//! at offset 0, which makes the kernel regenerate it: no path walk per
//! sample.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A `/proc` file kept open, re-read whole on each [`ProcFile::read`].
pub(crate) struct ProcFile {
    file: File,
    buf: ReadBuf,
}

/// A buffer for whole-file reads: its space is zeroed once, when it grows,
/// not at each read (zeroing a page per read was half of the sampler's
/// time).
#[derive(Default)]
pub(crate) struct ReadBuf {
    space: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// The bytes of the last read.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.space[..self.len]
    }

    /// The last read as text (empty if it is not UTF-8).
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or("")
    }
}

impl ProcFile {
    /// Opens `path` and reads it once (so that a file that opens but cannot
    /// be read, such as `/proc/self/io` under some security modules, is
    /// found unavailable at the start).
    pub(crate) fn open(path: &str) -> io::Result<ProcFile> {
        let mut f = ProcFile {
            file: File::open(path)?,
            buf: ReadBuf::default(),
        };
        f.read()?;
        Ok(f)
    }

    /// Reads the file's current content.
    pub(crate) fn read(&mut self) -> io::Result<()> {
        read_whole(&self.file, &mut self.buf)
    }

    /// The content last read (text; a file that is not UTF-8 reads as
    /// empty).
    pub(crate) fn text(&self) -> &str {
        self.buf.text()
    }
}

/// Reads all of `file` from offset 0 into `buf`.
pub(crate) fn read_whole(file: &File, buf: &mut ReadBuf) -> io::Result<()> {
    buf.len = 0;
    loop {
        if buf.space.len() - buf.len < 1024 {
            let more = buf.space.len().max(4096);
            buf.space.resize(buf.space.len() + more, 0);
        }
        match file.read_at(&mut buf.space[buf.len..], buf.len as u64) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The first `N` whitespace-separated numbers of `text` (0 for a missing
/// or bad one), without allocating.
fn numbers<const N: usize>(text: &str) -> [u64; N] {
    let mut out = [0; N];
    for (o, v) in out.iter_mut().zip(text.split_ascii_whitespace()) {
        *o = v.parse().unwrap_or(0);
    }
    out
}

/// `/proc/self/statm`: resident pages (its second field).
pub(crate) fn statm_resident_pages(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `/proc/self/io`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Io {
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

pub(crate) fn io(text: &str) -> Io {
    let mut io = Io::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().parse().unwrap_or(0);
        match k {
            "rchar" => io.rchar = v,
            "wchar" => io.wchar = v,
            "read_bytes" => io.read_bytes = v,
            "write_bytes" => io.write_bytes = v,
            _ => {}
        }
    }
    io
}

/// `/proc/<pid>/task/<tid>/schedstat`: time on a CPU and time waiting on
/// a run queue (ns).
pub(crate) fn schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_ascii_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// One CPU line of `/proc/stat`: busy and idle (iowait included) and
/// iowait times, in clock ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// `cpu` for the whole host, `cpu0`... for each CPU.
    pub name: String,
    pub busy: u64,
    pub idle: u64,
    pub iowait: u64,
}

/// The CPU lines of `/proc/stat`.
pub(crate) fn stat_cpus(text: &str, out: &mut Vec<CpuTimes>) {
    out.clear();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut f = line.split_ascii_whitespace();
        let Some(name) = f.next() else { continue };
        // user nice system idle iowait irq softirq steal (guest time is
        // inside user and nice).
        let v: [u64; 8] = numbers(&line[name.len()..]);
        let at = |i: usize| v[i];
        out.push(CpuTimes {
            name: name.to_owned(),
            busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
            idle: at(3) + at(4),
            iowait: at(4),
        });
    }
}

/// `/proc/loadavg`: the one-minute load and the runnable tasks.
pub(crate) fn loadavg(text: &str) -> Option<(f64, u64)> {
    let mut f = text.split_ascii_whitespace();
    let load = f.next()?.parse().ok()?;
    let runnable = f.nth(2)?.split('/').next()?.parse().ok()?;
    Some((load, runnable))
}

/// `/proc/meminfo` values used, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mem {
    pub total: u64,
    pub available: u64,
    pub cached: u64,
}

pub(crate) fn meminfo(text: &str) -> Mem {
    let mut m = Mem::default();
    let mut found = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match k {
            "MemTotal" => &mut m.total,
            "MemAvailable" => &mut m.available,
            "Cached" => &mut m.cached,
            _ => continue,
        };
        let [kb] = numbers(v);
        *slot = kb * 1024;
        found += 1;
        if found == 3 {
            break; // the rest of the file is of no use
        }
    }
    m
}

/// A line of `/proc/diskstats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Disk {
    pub name: String,
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    /// Time with I/O in flight (ms).
    pub busy_ms: u64,
}

pub(crate) fn diskstats(text: &str, out: &mut Vec<Disk>) {
    out.clear();
    for line in text.lines() {
        // major minor name, then the counters (the name reads as 0).
        let Some(name) = line.split_ascii_whitespace().nth(2) else {
            continue;
        };
        let v: [u64; 13] = numbers(line);
        let n = |i: usize| v[i];
        // Sectors are 512 bytes here whatever the device's sector size.
        out.push(Disk {
            name: name.to_owned(),
            reads: n(3),
            read_bytes: n(5) * 512,
            writes: n(7),
            write_bytes: n(9) * 512,
            busy_ms: n(12),
        });
    }
}

/// A line of `/proc/net/dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Net {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

pub(crate) fn net_dev(text: &str, out: &mut Vec<Net>) {
    out.clear();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if rest.split_ascii_whitespace().nth(9).is_none() {
            continue; // the header lines
        }
        let v: [u64; 10] = numbers(rest);
        out.push(Net {
            name: name.trim().to_owned(),
            rx_bytes: v[0],
            rx_packets: v[1],
            tx_bytes: v[8],
            tx_packets: v[9],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_formats() {
        assert_eq!(
            statm_resident_pages("5120 1234 300 10 0 900 0\n"),
            Some(1234)
        );
        assert_eq!(statm_resident_pages(""), None);
        let i = io("rchar: 100\nwchar: 200\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 52428800\ncancelled_write_bytes: 0\n");
        assert_eq!(
            i,
            Io {
                rchar: 100,
                wchar: 200,
                read_bytes: 4096,
                write_bytes: 52428800
            }
        );
        assert_eq!(schedstat("123456 7890 12\n"), Some((123456, 7890)));
        assert_eq!(schedstat("x"), None);
        let mut cpus = Vec::new();
        stat_cpus(
            "cpu  10 1 5 100 7 2 3 4 0 0\ncpu0 5 0 2 50 3 1 1 2 0 0\nintr 1 2\nctxt 5\n",
            &mut cpus,
        );
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[0],
            CpuTimes {
                name: "cpu".into(),
                busy: 10 + 1 + 5 + 2 + 3 + 4,
                idle: 107,
                iowait: 7
            }
        );
        assert_eq!(cpus[1].name, "cpu0");
        assert_eq!(loadavg("0.52 0.30 0.10 3/456 7890\n"), Some((0.52, 3)));
        let m = meminfo("MemTotal:       16384 kB\nMemFree:  100 kB\nMemAvailable:    8192 kB\nBuffers: 1 kB\nCached:  2048 kB\nSwapCached: 5 kB\n");
        assert_eq!(
            m,
            Mem {
                total: 16384 * 1024,
                available: 8192 * 1024,
                cached: 2048 * 1024
            }
        );
        let mut d = Vec::new();
        diskstats("   8       0 sda 100 5 2000 30 50 7 4000 60 0 80 90 0 0 0 0\n   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0\n", &mut d);
        assert_eq!(
            d[0],
            Disk {
                name: "sda".into(),
                reads: 100,
                read_bytes: 2000 * 512,
                writes: 50,
                write_bytes: 4000 * 512,
                busy_ms: 80
            }
        );
        assert_eq!(d.len(), 2);
        let mut n = Vec::new();
        net_dev("Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 7 2 0 0 0 0 0 0\n", &mut n);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[1],
            Net {
                name: "eth0".into(),
                rx_bytes: 5,
                rx_packets: 1,
                tx_bytes: 7,
                tx_packets: 2
            }
        );
    }

    #[test]
    fn a_proc_file_reads_again_from_the_start() {
        let mut f = ProcFile::open("/proc/self/stat").unwrap();
        f.read().unwrap();
        let a = f.text().to_owned();
        f.read().unwrap();
        let b = f.text().to_owned();
        assert!(a.starts_with(&std::process::id().to_string()));
        assert!(b.starts_with(&std::process::id().to_string()));
        // A file longer than one read (more than the first buffer).
        let mut m = ProcFile::open("/proc/self/maps").unwrap();
        let whole = std::fs::read_to_string("/proc/self/maps").unwrap();
        m.read().unwrap();
        assert_eq!(m.text().lines().count(), whole.lines().count());
    }
}
