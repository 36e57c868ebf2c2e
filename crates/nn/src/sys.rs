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
//! - **One matmul thread on small machines.** candle runs its matmuls on rayon's pool. On a
//!   2-core machine DeepFM, SAML and DUPN train 1.2-1.3x faster with `RAYON_NUM_THREADS=1`
//!   (docs/benchmarks.md, thread policy): their matmuls (batches of 256-1024 rows by a few
//!   hundred columns) gain nothing from a second thread, which competes with the element-wise
//!   work (our reading of the measurements, not profiled separately). [`thread_policy`] sets
//!   it on machines of at most [`SINGLE_MATMUL_THREAD_MAX_CORES`] cores unless the user chose;
//!   child processes (e.g. the tests `cargo xtask ci` runs) inherit it.

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

/// The most available cores on which [`thread_policy`] gives matmuls one thread. Larger
/// machines were not measured, so candle's default (the machine's physical cores) stays there.
pub const SINGLE_MATMUL_THREAD_MAX_CORES: usize = 2;

/// What [`thread_policy`] sets `RAYON_NUM_THREADS` to, given the variable's current value and
/// the number of available cores: `Some("1")` on small machines when the user left it unset,
/// otherwise `None` (leave it alone).
pub fn matmul_threads_for(user: Option<&std::ffi::OsStr>, cores: usize) -> Option<&'static str> {
    match user {
        Some(_) => None,
        None if cores <= SINGLE_MATMUL_THREAD_MAX_CORES => Some("1"),
        None => None,
    }
}

/// Gives candle's matmuls one thread (`RAYON_NUM_THREADS=1`) on machines with at most
/// [`SINGLE_MATMUL_THREAD_MAX_CORES`] available cores, unless `RAYON_NUM_THREADS` is already
/// set. Returns the value it set, if any. In every run compared the metrics did not change
/// with it (the quickstart prints the same metrics to the last digit either way).
///
/// # Safety
/// It changes the process environment, which is only sound while no other thread of the
/// process can be reading or writing it: call it first thing in `main`, before any thread is
/// started.
pub unsafe fn thread_policy() -> Option<&'static str> {
    // An unknown core count leaves the default alone.
    let cores = std::thread::available_parallelism().ok()?.get();
    let user = std::env::var_os("RAYON_NUM_THREADS");
    let set = matmul_threads_for(user.as_deref(), cores)?;
    // SAFETY: the caller guarantees no other thread exists yet (see above).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", set) };
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_matmul_thread_only_on_small_machines_and_only_when_unset() {
        use std::ffi::OsStr;
        assert_eq!(matmul_threads_for(None, 1), Some("1"));
        assert_eq!(matmul_threads_for(None, 2), Some("1"));
        assert_eq!(matmul_threads_for(None, 3), None);
        assert_eq!(matmul_threads_for(None, 64), None);
        for cores in [1, 2, 16] {
            assert_eq!(matmul_threads_for(Some(OsStr::new("2")), cores), None);
            assert_eq!(matmul_threads_for(Some(OsStr::new("")), cores), None);
        }
    }

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
