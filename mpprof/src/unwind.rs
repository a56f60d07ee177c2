//! The loaded objects of this process (`dl_iterate_phdr`) and a DWARF
//! unwinder over them (`framehop`), for the sampling profiler: the kernel
//! copies a sampled thread's registers and the top of its stack, and the
//! profiler's thread unwinds the copy with each object's `.eh_frame`
//! (which Rust and C compilers emit whether or not the code keeps frame
//! pointers). A leaf: libc and framehop only.
//!
//! The unwind tables are copied out of the objects' mapped memory while
//! the loader's lock is held (inside the `dl_iterate_phdr` callback), so a
//! library unloaded later leaves a stale but valid copy, never a dangling
//! read.

use std::ffi::CStr;
use std::ops::Range;

use crate::format::Module;

/// One loaded object: its executable segments (as `Meta::Module`
/// entries) and what the unwinder needs of it.
pub(crate) struct Object {
    /// Executable segments, with their file offsets.
    pub segments: Vec<Module>,
    /// Load bias (`dlpi_addr`): actual address = stated address + bias.
    pub bias: u64,
    /// Stated address range and copy of `.eh_frame_hdr` and `.eh_frame`.
    unwind: Option<UnwindData>,
}

struct UnwindData {
    hdr: (Range<u64>, Vec<u8>),
    frame: (Range<u64>, Vec<u8>),
    text: Range<u64>,
}

/// Every loaded object, with its build id and unwind tables.
pub(crate) fn loaded_objects() -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info for the call's duration,
        // and `data` is the `Vec` below.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Object>)) };
        // SAFETY: the loader holds its lock: every segment it lists is
        // mapped until the callback returns.
        out.push(unsafe { object(info) });
        0
    }
    // SAFETY: the callback matches dl_iterate_phdr's contract and only
    // touches `out` through `data`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            &mut out as *mut Vec<Object> as *mut libc::c_void,
        )
    };
    out
}

/// The loader's counts of objects loaded and unloaded so far
/// (`dlpi_adds`, `dlpi_subs`): when they have not changed, neither has the
/// list of objects. `None` where the loader does not say.
pub(crate) fn generation() -> Option<(u64, u64)> {
    let mut out: Option<(u64, u64)> = None;
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        let need = std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8;
        if size >= need {
            // SAFETY: the loader's info is valid for the call and holds the
            // fields (its size says so); `data` is the Option below.
            unsafe {
                *(data as *mut Option<(u64, u64)>) = Some(((*info).dlpi_adds, (*info).dlpi_subs));
            }
        }
        1 // the first object tells; stop
    }
    // SAFETY: the callback matches dl_iterate_phdr's contract.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first),
            &mut out as *mut Option<(u64, u64)> as *mut libc::c_void,
        )
    };
    out
}

/// Reads one object.
///
/// # Safety
///
/// `info` must describe a loaded object whose segments stay mapped during
/// the call (inside a `dl_iterate_phdr` callback).
unsafe fn object(info: &libc::dl_phdr_info) -> Object {
    // SAFETY: dlpi_phdr points to dlpi_phnum headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let bias = info.dlpi_addr;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string of the loader's.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let path = if name.is_empty() {
        // The main executable.
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    };
    // SAFETY: a mapped segment of the object, read whole.
    let mem = |svma: u64, len: u64| unsafe {
        std::slice::from_raw_parts(bias.wrapping_add(svma) as *const u8, len as usize)
    };
    let mut build_id = Vec::new();
    for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
        if let Some(id) = gnu_build_id(mem(ph.p_vaddr, ph.p_memsz)) {
            build_id = id.to_vec();
            break;
        }
    }
    let loads: Vec<Range<u64>> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD)
        .map(|p| p.p_vaddr..p.p_vaddr + p.p_memsz)
        .collect();
    let exec: Vec<&libc::Elf64_Phdr> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
        .collect();
    let segments = exec
        .iter()
        .map(|ph| Module {
            start: bias.wrapping_add(ph.p_vaddr),
            end: bias.wrapping_add(ph.p_vaddr + ph.p_memsz),
            offset: ph.p_offset,
            path: path.clone(),
            build_id: build_id.clone(),
        })
        .collect();
    let text = match (
        exec.iter().map(|p| p.p_vaddr).min(),
        exec.iter().map(|p| p.p_vaddr + p.p_memsz).max(),
    ) {
        (Some(a), Some(b)) => a..b,
        _ => 0..0,
    };
    let unwind = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_GNU_EH_FRAME)
        .and_then(|ph| {
            let hdr = mem(ph.p_vaddr, ph.p_memsz);
            let start = eh_frame_start(hdr, ph.p_vaddr)?;
            // The segment that holds .eh_frame bounds it; its entries end
            // with a zero-length terminator.
            let seg = loads.iter().find(|r| r.contains(&start))?;
            let len = eh_frame_len(mem(start, seg.end - start));
            Some(UnwindData {
                hdr: (ph.p_vaddr..ph.p_vaddr + ph.p_memsz, hdr.to_vec()),
                frame: (start..start + len as u64, mem(start, len as u64).to_vec()),
                text: text.clone(),
            })
        });
    Object {
        segments,
        bias,
        unwind,
    }
}

/// The stated address of `.eh_frame`, from its `.eh_frame_hdr` (at stated
/// address `at`): version 1, then the pointer in its encoding (pc-relative
/// or absolute, 4 or 8 bytes, as linkers write it).
fn eh_frame_start(hdr: &[u8], at: u64) -> Option<u64> {
    if hdr.len() < 8 || hdr[0] != 1 {
        return None;
    }
    let enc = hdr[1];
    let field = at + 4;
    let value = match enc & 0x0f {
        0x03 => u64::from(u32::from_le_bytes(hdr[4..8].try_into().ok()?)),
        0x0b => i64::from(i32::from_le_bytes(hdr[4..8].try_into().ok()?)) as u64,
        0x04 | 0x0c => u64::from_le_bytes(hdr.get(4..12)?.try_into().ok()?),
        _ => return None,
    };
    match enc & 0x70 {
        0x00 => Some(value),
        0x10 => Some(field.wrapping_add(value)),
        _ => None,
    }
}

/// Length of the `.eh_frame` entries at the start of `mem`, through the
/// zero terminator (or all of `mem` if there is none).
fn eh_frame_len(mem: &[u8]) -> usize {
    let mut at = 0usize;
    while let Some(b) = mem.get(at..at + 4) {
        let len = u32::from_le_bytes(b.try_into().unwrap_or_default());
        if len == 0 {
            return at + 4;
        }
        let step = if len == u32::MAX {
            match mem.get(at + 4..at + 12) {
                Some(b) => 12usize
                    .saturating_add(u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize),
                None => break,
            }
        } else {
            4 + len as usize
        };
        at = at.saturating_add(step);
    }
    at.min(mem.len())
}

/// The `NT_GNU_BUILD_ID` descriptor in a segment of ELF notes.
pub(crate) fn gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let ty = u32_at(notes, 8)?;
        let name_end = 12 + align4(namesz);
        let desc_end = name_end.checked_add(align4(descsz))?;
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end + descsz)?;
        if ty == 3 && name == b"GNU\0" {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// The registers a sample carries for unwinding, in the kernel's
/// `PERF_REG_X86_*` order of the mask [`REGS_MASK`] asks for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Regs {
    pub bp: u64,
    pub sp: u64,
    pub ip: u64,
}

/// `sample_regs_user`: BP (6), SP (7) and IP (8), read back in that order.
pub(crate) const REGS_MASK: u64 = 1 << 6 | 1 << 7 | 1 << 8;

/// A DWARF unwinder over this process's loaded objects.
pub(crate) struct Unwinder {
    #[cfg(target_arch = "x86_64")]
    inner: framehop::x86_64::UnwinderX86_64<Vec<u8>>,
    #[cfg(target_arch = "x86_64")]
    cache: framehop::x86_64::CacheX86_64,
}

impl Unwinder {
    pub(crate) fn new() -> Unwinder {
        Unwinder {
            #[cfg(target_arch = "x86_64")]
            inner: framehop::x86_64::UnwinderX86_64::new(),
            #[cfg(target_arch = "x86_64")]
            cache: framehop::x86_64::CacheX86_64::new(),
        }
    }

    /// Adds `o`'s unwind tables (an object without them unwinds by frame
    /// pointer, as far as that goes).
    pub(crate) fn add(&mut self, o: &mut Object) {
        #[cfg(target_arch = "x86_64")]
        if let Some(u) = o.unwind.take() {
            use framehop::Unwinder as _;
            let avma = |r: &Range<u64>| o.bias.wrapping_add(r.start)..o.bias.wrapping_add(r.end);
            let info = framehop::ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: Some(u.text.clone()),
                eh_frame_svma: Some(u.frame.0),
                eh_frame: Some(u.frame.1),
                eh_frame_hdr_svma: Some(u.hdr.0),
                eh_frame_hdr: Some(u.hdr.1),
                ..Default::default()
            };
            let name = o
                .segments
                .first()
                .map(|m| m.path.clone())
                .unwrap_or_default();
            self.inner
                .add_module(framehop::Module::new(name, avma(&u.text), o.bias, info));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = o;
    }

    /// Unwinds a sample: `regs` at the sample, `stack` the copy of its
    /// stack from `regs.sp` up. Pushes the frames' addresses into `out`,
    /// leaf first (the first is the instruction pointer, the others return
    /// addresses), at most `max`.
    pub(crate) fn unwind(&mut self, regs: Regs, stack: &[u8], max: usize, out: &mut Vec<u64>) {
        out.clear();
        #[cfg(target_arch = "x86_64")]
        {
            use framehop::Unwinder as _;
            let sp = regs.sp;
            let mut read = |addr: u64| -> Result<u64, ()> {
                let off = addr.checked_sub(sp).ok_or(())? as usize;
                let b = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
                Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
            };
            let r = framehop::x86_64::UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
            let mut it = self
                .inner
                .iter_frames(regs.ip, r, &mut self.cache, &mut read);
            while out.len() < max {
                match it.next() {
                    Ok(Some(f)) => out.push(f.address()),
                    _ => break,
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (stack, max);
            out.push(regs.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binary_has_its_segments_build_id_and_unwind_tables() {
        let objs = loaded_objects();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let here =
            this_binary_has_its_segments_build_id_and_unwind_tables as *const () as usize as u64;
        let o = objs
            .iter()
            .find(|o| o.segments.iter().any(|m| m.start <= here && here < m.end))
            .expect("this function is in an executable segment");
        let m = &o.segments[0];
        assert_eq!(m.path, exe.to_string_lossy());
        // rustc's linker passes --build-id on Linux.
        assert!(!m.build_id.is_empty(), "{:?}", m.build_id);
        let u = o.unwind.as_ref().expect("Rust emits .eh_frame_hdr");
        assert!(u.frame.1.len() > 1000, "{}", u.frame.1.len());
        assert!(objs
            .iter()
            .any(|o| o.segments.iter().any(|m| m.path.contains("libc"))));
    }

    /// Unwinds this thread's own stack, copied like the kernel copies it,
    /// through three non-inlined frames.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn an_own_stack_unwinds_through_its_callers() {
        #[inline(never)]
        fn outer(u: &mut Unwinder) -> Vec<u64> {
            std::hint::black_box(middle(u))
        }
        #[inline(never)]
        fn middle(u: &mut Unwinder) -> Vec<u64> {
            std::hint::black_box(inner(u))
        }
        #[inline(never)]
        fn inner(u: &mut Unwinder) -> Vec<u64> {
            let (ip, sp, bp): (u64, u64, u64);
            // SAFETY: reads three registers and the address of a label.
            unsafe {
                std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
            }
            // The stack from sp up to its top (at most 16 KiB, as the
            // kernel copies it): a thread starts near its stack's top, so
            // a fixed 16 KiB could run past it.
            // SAFETY: pthread_getattr_np fills `attr` for this thread, and
            // pthread_attr_getstack reads it; destroyed after.
            let top = unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
                let (mut base, mut size) = (std::ptr::null_mut(), 0usize);
                assert_eq!(libc::pthread_attr_getstack(&attr, &mut base, &mut size), 0);
                libc::pthread_attr_destroy(&mut attr);
                base as u64 + size as u64
            };
            let len = (top - sp).min(16384) as usize;
            // SAFETY: sp..sp+len is this thread's stack, mapped.
            let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
            let mut out = Vec::new();
            u.unwind(Regs { bp, sp, ip }, &stack, 64, &mut out);
            out
        }
        let mut u = Unwinder::new();
        for mut o in loaded_objects() {
            u.add(&mut o);
        }
        let frames = outer(&mut u);
        let fn_range = |f: usize| (f as u64)..(f as u64 + 4096);
        let within = |f: usize| frames.iter().any(|&a| fn_range(f).contains(&a));
        assert!(frames.len() >= 4, "{frames:x?}");
        assert!(within(inner as *const () as usize), "{frames:x?}");
        assert!(within(middle as *const () as usize), "{frames:x?}");
        assert!(within(outer as *const () as usize), "{frames:x?}");
    }

    #[test]
    fn build_id_notes_are_parsed_and_bad_ones_refused() {
        let mut n = Vec::new();
        // An ABI tag note first, then the build id.
        for (name, ty, desc) in [
            (&b"GNU\0"[..], 1u32, &[0u8; 16][..]),
            (b"GNU\0", 3, b"\x01\x02\x03"),
        ] {
            n.extend((name.len() as u32).to_ne_bytes());
            n.extend((desc.len() as u32).to_ne_bytes());
            n.extend(ty.to_ne_bytes());
            n.extend(name);
            n.extend(desc);
            while n.len() % 4 != 0 {
                n.push(0);
            }
        }
        assert_eq!(gnu_build_id(&n), Some(&[1u8, 2, 3][..]));
        assert_eq!(gnu_build_id(&n[..n.len() - 4]), None);
        assert_eq!(gnu_build_id(&[0xff; 20]), None);
    }

    #[test]
    fn eh_frame_pointers_and_lengths_are_decoded() {
        // pcrel | sdata4: field at 0x1004, value -0x100.
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
        hdr.extend((-0x100i32).to_le_bytes());
        assert_eq!(eh_frame_start(&hdr, 0x1000), Some(0x1004 - 0x100));
        hdr[1] = 0x03;
        hdr[4..8].copy_from_slice(&0x2000u32.to_le_bytes());
        assert_eq!(eh_frame_start(&hdr, 0x1000), Some(0x2000));
        hdr[0] = 2;
        assert_eq!(eh_frame_start(&hdr, 0x1000), None);
        // Two entries (8 and 4 bytes of body), the terminator, then junk.
        let mut f = Vec::new();
        f.extend(8u32.to_le_bytes());
        f.extend([0; 8]);
        f.extend(4u32.to_le_bytes());
        f.extend([0; 4]);
        f.extend(0u32.to_le_bytes());
        f.extend([0xff; 7]);
        assert_eq!(eh_frame_len(&f), 24);
        assert_eq!(eh_frame_len(&f[..10]), 10);
    }
}
