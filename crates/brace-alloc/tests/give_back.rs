//! With the delay at zero, memory freed by a thread leaves the process at once: resident
//! memory falls back right after a burst is dropped, with no further allocation in between
//! to let a delayed purge run. (With mimalloc's default delay the burst stays resident.)

#[global_allocator]
static ALLOCATOR: brace_alloc::Allocator = brace_alloc::Allocator;

/// This process's resident memory in KiB, read without allocating (a read into a stack
/// buffer), so that reading it gives mimalloc no chance to purge.
fn rss_kib() -> u64 {
    use std::io::Read;

    let mut buffer = [0_u8; 4096];
    let mut file = std::fs::File::open("/proc/self/statm").expect("/proc/self/statm");
    let n = file.read(&mut buffer).expect("statm is readable");
    let text = std::str::from_utf8(&buffer[..n]).expect("statm is ASCII");
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's second field is the resident page count");
    pages * 4
}

#[test]
fn a_dropped_burst_leaves_the_process_at_once() {
    if !std::path::Path::new("/proc/self/statm").exists() {
        eprintln!("skipped: no /proc/self/statm on this system");
        return;
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        assert_ne!(
            brace_alloc::purge_delay_ms(),
            0,
            "mimalloc's default delay is not zero"
        );
    }
    brace_alloc::give_back_at_once();
    assert_eq!(brace_alloc::purge_delay_ms(), 0);

    let before = rss_kib();
    // 64 MiB in 1 MiB blocks, every page touched.
    let burst: Vec<Vec<u8>> = (0_u8..64).map(|i| vec![i | 1; 1 << 20]).collect();
    let held = rss_kib();
    assert!(
        held >= before + 48 * 1024,
        "the burst is resident: {before} KiB before, {held} KiB held"
    );
    drop(burst);
    let after = rss_kib();
    assert!(
        after + 32 * 1024 <= held,
        "freed memory went back: {held} KiB held, still {after} KiB after the drop"
    );
}
