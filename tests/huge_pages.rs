//! Blocks of explicit huge pages, private and shared: they open, pin, report
//! their page size and grow and shrink by whole huge pages; asking for more
//! than the pool holds is a typed error that says where to reserve more.
//!
//! The pool is the system's (`/proc/sys/vm/nr_hugepages`): CI reserves some
//! and sets `UNIMEM_REQUIRE_HUGE_PAGES=1`, so there these tests must run;
//! elsewhere, with no 2 MiB pages free, the ones that need them say SKIPPED.
#![cfg(all(target_os = "linux", not(miri)))]

use std::sync::Mutex;

use unimem::{BlockOptions, Error, Pages, Pinning};

const HUGE: usize = 2 << 20;

/// The pool is process-wide (and system-wide): the tests take turns.
static POOL: Mutex<()> = Mutex::new(());

fn free_pages(size_kib: usize) -> usize {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{size_kib}kB/free_hugepages");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `pages` free 2 MiB pages are there; fails in CI if not.
fn have_pages(test: &str, pages: usize) -> bool {
    let free = free_pages(2048);
    if free >= pages {
        return true;
    }
    if std::env::var_os("UNIMEM_REQUIRE_HUGE_PAGES").is_some() {
        panic!("{test}: CI reserved huge pages, but only {free} of 2 MiB are free");
    }
    println!(
        "SKIPPED {test}: {free} free 2 MiB huge pages, {pages} needed \
         (reserve them in /proc/sys/vm/nr_hugepages)"
    );
    false
}

/// The address range of an smaps header line ("start-end perms ...").
fn range_of(line: &str) -> Option<std::ops::Range<usize>> {
    let (range, _) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
}

/// The kernel page size of the mapping that holds `ptr`, from smaps.
fn kernel_page_size(ptr: *const u8) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(range) = range_of(line) {
            inside = range.contains(&ptr.addr());
        } else if let Some(kib) = line.strip_prefix("KernelPageSize:").filter(|_| inside) {
            let kib: usize = kib.trim().trim_end_matches(" kB").trim().parse().unwrap();
            return kib * 1024;
        }
    }
    panic!("no mapping holds {ptr:p}")
}

fn options(shared: bool) -> BlockOptions<'static> {
    BlockOptions::new()
        .pages(Pages::Huge2M)
        .shared(shared)
        .quiet(true)
}

#[test]
fn a_huge_page_block_opens_pinned_and_reports_its_page_size() {
    let _pool = POOL.lock().unwrap();
    if !have_pages(
        "a_huge_page_block_opens_pinned_and_reports_its_page_size",
        4,
    ) {
        return;
    }
    for shared in [false, true] {
        let before = free_pages(2048);
        let mut block = options(shared).open(3 << 20).unwrap();
        assert_eq!(block.granule(), HUGE);
        assert_eq!(
            block.committed(),
            2 * HUGE,
            "rounded up to whole huge pages"
        );
        assert_eq!(block.as_ptr().addr() % HUGE, 0);
        assert!(block.is_pinned(), "shared: {shared}");
        assert_eq!(kernel_page_size(block.as_ptr()), HUGE, "shared: {shared}");
        block.as_bytes_mut().fill(0x5A);
        assert!(block.as_bytes().iter().all(|&b| b == 0x5A));
        assert_eq!(free_pages(2048), before - 2, "two pages from the pool");
        drop(block);
        assert_eq!(free_pages(2048), before, "and back");
    }
}

#[test]
fn a_huge_page_block_grows_and_shrinks_by_whole_pages() {
    let _pool = POOL.lock().unwrap();
    if !have_pages("a_huge_page_block_grows_and_shrinks_by_whole_pages", 4) {
        return;
    }
    let before = free_pages(2048);
    let mut block = options(false)
        .capacity(8 * HUGE)
        .pinning(Pinning::BestEffort)
        .open(HUGE)
        .unwrap();
    let ptr = block.as_ptr();
    block.as_bytes_mut().fill(1);
    block.commit(3 * HUGE + 1).unwrap();
    assert_eq!(block.committed(), 4 * HUGE);
    assert_eq!(block.as_ptr(), ptr);
    assert_eq!(free_pages(2048), before - 4);
    assert_eq!(
        kernel_page_size(block.as_ptr().wrapping_add(3 * HUGE)),
        HUGE
    );
    assert!(block.as_bytes()[..HUGE].iter().all(|&b| b == 1));
    block.decommit(HUGE + 1).unwrap();
    assert_eq!(block.committed(), 2 * HUGE);
    assert_eq!(
        free_pages(2048),
        before - 2,
        "decommitted pages go back to the pool"
    );
}

#[test]
fn too_few_huge_pages_is_a_typed_error_naming_the_pool() {
    let _pool = POOL.lock().unwrap();
    let free = free_pages(2048);
    for shared in [false, true] {
        match options(shared).open((free + 1) * HUGE) {
            Err(error @ Error::HugePages { .. }) => {
                let text = error.to_string();
                assert!(text.contains("/proc/sys/vm/nr_hugepages"), "{text}");
                assert_eq!(error.raw_os_error(), Some(libc::ENOMEM), "{text}");
            }
            other => panic!("{} huge pages of {free} free: {other:?}", free + 1),
        }
    }
    // 1 GiB pages: used if the system has one free, a typed error if not.
    let gib = BlockOptions::new().pages(Pages::Huge1G).quiet(true).open(1);
    match (free_pages(1 << 20), gib) {
        (0, Err(Error::HugePages { page_size, .. })) => assert_eq!(page_size, 1 << 30),
        (0, other) => panic!("no 1 GiB page is free, yet: {other:?}"),
        (_, Ok(block)) => {
            assert_eq!(block.granule(), 1 << 30);
            assert_eq!(kernel_page_size(block.as_ptr()), 1 << 30);
        }
        (_, Err(error)) => panic!("a free 1 GiB page, yet: {error}"),
    }
}
