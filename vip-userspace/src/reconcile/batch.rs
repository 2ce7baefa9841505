//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_LOOKUP_BATCH` on an array map (kernel ≥ 5.6), by a
//! small raw bpf(2) call: aya 0.14 has no batch operations. One syscall writes (or reads) a
//! whole Maglev table instead of one per slot; callers fall back to single updates when the
//! kernel refuses (EINVAL/ENOTSUPP on older kernels).
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of the size passed; the
    // pointers in it point at buffers that outlive the call and hold `count` elements.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `values` into slots `base..base+len` of the u32 array map `fd`, in one call per
/// (kernel-chosen) batch.
pub fn update_u32(fd: BorrowedFd<'_>, base: u32, values: &[u32]) -> std::io::Result<()> {
    let keys: Vec<u32> = (base..base + values.len() as u32).collect();
    let mut done = 0usize;
    while done < values.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: (values.len() - done) as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        if attr.count == 0 {
            return Err(std::io::Error::other("batch update wrote nothing"));
        }
        done += attr.count as usize;
    }
    Ok(())
}

/// Reads slots `base..base+len` of the u32 array map `fd`.
pub fn lookup_u32(fd: BorrowedFd<'_>, base: u32, len: u32) -> std::io::Result<Vec<u32>> {
    let mut keys = vec![0u32; len as usize];
    let mut values = vec![0u32; len as usize];
    // The batch cursor is the last key handled: the kernel continues after it (none: from
    // slot 0).
    let mut cursor: Option<u32> = base.checked_sub(1);
    let mut next: u32 = 0;
    let mut got = 0usize;
    while got < len as usize {
        let mut attr = BatchAttr {
            in_batch: cursor.as_ref().map_or(0, |c| c as *const u32 as u64),
            out_batch: std::ptr::addr_of_mut!(next) as u64,
            keys: keys[got..].as_mut_ptr() as u64,
            values: values[got..].as_mut_ptr() as u64,
            count: len - got as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        got += n;
        match r {
            Ok(()) => {}
            // ENOENT: the map's end was reached (with what it returned).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        if n == 0 {
            break;
        }
        cursor = Some(next);
    }
    if got < len as usize {
        return Err(std::io::Error::other("batch lookup ended early"));
    }
    Ok(values)
}
