//! Process-wide memory settings of a shard process, freeing large
//! collections off the request path ([`drop_elsewhere`]), and a thread's
//! CPU time ([`thread_cpu_time`], to tell a slow turn's own work from time
//! it waited for a core).
//!
//! A shard's heap grows by hundreds of MiB at a time: replaying a log, loading
//! or encoding a snapshot. mimalloc advises the kernel to back its arenas with
//! transparent huge pages (`MADV_HUGEPAGE`), so each first touch of a 2 MiB
//! region zeroes all of it at once. On the benchmark box that zeroing
//! (`clear_page_erms`) was 31% of a replay's samples; with huge pages off, the
//! replay of 1,000,000 events took 10–30% less time and encoding a snapshot
//! about 40% less (`docs/performance.md`). Shards run with them off unless
//! told otherwise (`--huge-pages`).

/// Lets the kernel back this process's memory with transparent huge pages from
/// now on (`on`), or not: `prctl(PR_SET_THP_DISABLE)`, which covers memory
/// already mapped too. Elsewhere than Linux this does nothing.
pub fn set_huge_pages(on: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::thread::disable_transparent_huge_pages(!on).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = on;
        Ok(())
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`: a system
/// call, about 0.2 µs here); `None` elsewhere than Linux.
pub fn thread_cpu_time() -> Option<std::time::Duration> {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let secs = u64::try_from(t.tv_sec).ok()?;
        let nanos = u32::try_from(t.tv_nsec).ok()?;
        Some(std::time::Duration::new(secs, nanos))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Drops `value` on a thread of its own: freeing a large collection's
/// entries one by one would stall the caller (a shard's actor: every request
/// of the shard waits). Inline if no thread can be started.
pub fn drop_elsewhere<T: Send + 'static>(value: T) {
    // On failure the closure, and the value with it, is dropped here.
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    /// The kernel's own view of the setting (`THP_enabled` in
    /// `/proc/self/status`).
    fn thp_enabled() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("the kernel reports THP_enabled");
        line.split_whitespace().nth(1) == Some("1")
    }

    #[test]
    fn huge_pages_are_turned_off_and_on_for_the_process() {
        set_huge_pages(false).unwrap();
        assert!(!thp_enabled());
        set_huge_pages(true).unwrap();
        assert!(thp_enabled());
    }

    /// The thread's CPU time grows with its own work, and not with another
    /// thread's: a thread that only waits for a busy one uses almost none.
    #[test]
    fn thread_cpu_time_counts_this_thread_only() {
        let spin = || {
            let began = thread_cpu_time().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut x = 0u64;
            while thread_cpu_time().unwrap() - began < std::time::Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            }
            x
        };
        let waiting = thread_cpu_time().unwrap();
        std::thread::spawn(spin).join().unwrap();
        let waited = thread_cpu_time().unwrap() - waiting;
        assert!(waited < std::time::Duration::from_millis(20), "{waited:?}");
        spin();
    }
}
