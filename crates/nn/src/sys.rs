//! Operating-system hints that make host-memory embedding tables and candle's CPU training
//! fast on Linux/glibc. Everything here is advisory: on other systems, or when the kernel or C
//! library declines, nothing changes but speed.
//!
//! # Why
//! - **Huge pages for large tables.** A training step reads and writes ~1000 rows scattered
//!   over a table of gigabytes. With 4 KiB pages almost every row costs a TLB miss whose page
//!   walk itself misses the cache; 2 MiB pages remove most of them. [`advise_huge_pages`] asks
//!   for transparent huge pages on a buffer (`madvise(MADV_HUGEPAGE)`; effective when
//!   `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`).
//! - **glibc's malloc trimming.** Candle allocates a fresh buffer for every op output. With
//!   glibc's default thresholds, buffers of a few hundred KiB are served by `mmap` or at the top
//!   of a heap that is trimmed back to the OS after every step, so each step page-faults its
//!   temporaries again: measured ~10x slower steps for a 1024 x 64 embedding batch.
//!   [`tune_malloc`] raises the thresholds (`mallopt`). Programs should call it once at start;
//!   it is a process-wide choice, which is why the library never calls it by itself.

/// Asks the kernel to back `buf` with transparent huge pages. Returns whether the request was
/// made and accepted (false on other systems, for buffers smaller than one huge page, or when
/// the kernel refuses).
pub fn advise_huge_pages<T>(buf: &mut [T]) -> bool {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        // madvise needs a page-aligned start; only whole huge pages can become huge pages.
        let a = start.div_ceil(HUGE) * HUGE;
        let b = end / HUGE * HUGE;
        if b <= a {
            return false;
        }
        // SAFETY: `[a, b)` lies inside `buf`, memory this function borrows mutably, and
        // MADV_HUGEPAGE only changes how the kernel backs those pages: contents, validity and
        // protection of the range are unchanged, so no Rust reference is affected. The call
        // has no other side effect and its failure is reported through the return value.
        let rc = unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
        false
    }
}

/// Raises glibc's `mmap` and trim thresholds (to 32 MiB and 256 MiB) so the short-lived
/// tensors of a training step are recycled inside the heap instead of being returned to the
/// OS and faulted in again every step. Returns whether both settings were accepted (false on
/// other C libraries and systems). Call once, early, from a program (not from a library).
pub fn tune_malloc() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning parameters; it is thread-safe in glibc
        // and does not touch existing allocations. Both arguments are valid constants.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_accepted_and_change_nothing_observable() {
        let mut v: Vec<f32> = (0..(3 << 20)).map(|i| i as f32).collect();
        let before = v.clone();
        let accepted = advise_huge_pages(&mut v);
        assert_eq!(v, before);
        if cfg!(target_os = "linux") {
            let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap_or_default();
            if thp.contains("[always]") || thp.contains("[madvise]") {
                assert!(accepted);
            }
        }
        let mut small = vec![0u8; 100];
        assert!(!advise_huge_pages(&mut small));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(tune_malloc());
        }
    }
}
