//! Where a process file's bytes come from: a file on disk, or bytes in
//! memory (a fuzz input, a test's hand-made file, a recorder's own buffer
//! in its unit tests). The reader only ever asks for a range at an offset.

use std::fs::File;
use std::io;
use std::sync::Arc;

/// The bytes of one process buffer file.
#[derive(Debug)]
pub enum Source {
    /// A file on disk, read with positioned reads.
    File(File),
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
}

impl Source {
    /// Length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Source::File(f) => Ok(f.metadata()?.len()),
            Source::Bytes(b) => Ok(b.len() as u64),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fewer if the source
    /// ends first; returns how many.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Source::File(f) => read_file_at(f, buf, offset),
            Source::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
        }
    }
}

#[cfg(unix)]
fn read_file_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(windows)]
fn read_file_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.seek_read(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_file_that_ends() {
        let s = Source::Bytes(Arc::from(&b"abcdef"[..]));
        let mut buf = [0u8; 4];
        assert_eq!(s.read_at(&mut buf, 1).unwrap(), 4);
        assert_eq!(&buf, b"bcde");
        assert_eq!(s.read_at(&mut buf, 4).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(s.read_at(&mut buf, 6).unwrap(), 0);
        assert_eq!(s.read_at(&mut buf, u64::MAX).unwrap(), 0);
        assert_eq!(s.len().unwrap(), 6);
    }
}
