//! Blocks of explicit huge pages, private and shared: they open, pin, report
//! their page size and grow and shrink by whole huge pages; asking for more
//! than the pool holds is a typed error that says where to reserve more.
//! Where the kernel takes a page later than at commit (a forked child's
//! copy, a hole punched in a shared memfd), an empty pool is SIGBUS: shown
//! here, with the options that keep a process clear of it.
//!
//! The pool is the system's (`/proc/sys/vm/nr_hugepages`): CI reserves some
//! and sets `UNIMEM_REQUIRE_HUGE_PAGES=1`, so there these tests must run;
//! elsewhere, with no 2 MiB pages free, the ones that need them are
//! reported `ignored` with the reason (tests/harness).

mod common;
#[macro_use]
mod harness;

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::fork::{Ended, fork, wait};
use unimem::{Block, BlockOptions, Error, Pages, Pinning};

const HUGE: usize = 2 << 20;

/// The pool is process-wide (and system-wide): the tests take turns.
static POOL: Mutex<()> = Mutex::new(());

/// A turn at the pool (a test that failed or was skipped holding it gave
/// it up all the same).
fn pool() -> MutexGuard<'static, ()> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn free_pages(size_kib: usize) -> usize {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{size_kib}kB/free_hugepages");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Skips the test unless `pages` free 2 MiB pages are there (fails it in
/// CI, which reserves them).
fn need_pages(pages: usize) {
    let free = free_pages(2048);
    if free < pages {
        harness::component::<(), _>(
            "UNIMEM_REQUIRE_HUGE_PAGES",
            "needs free 2 MiB huge pages",
            Err(format!(
                "{free} free, {pages} needed (reserve them in /proc/sys/vm/nr_hugepages)"
            )),
        );
    }
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

fn a_huge_page_block_opens_pinned_and_reports_its_page_size() {
    let _pool = pool();
    need_pages(4);
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

fn a_huge_page_block_grows_and_shrinks_by_whole_pages() {
    let _pool = pool();
    need_pages(4);
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

fn too_few_huge_pages_is_a_typed_error_naming_the_pool() {
    let _pool = pool();
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

fn pool_value(name: &str) -> usize {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{name}");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Takes every 2 MiB page of the pool that no mapping has reserved (a
/// private Block of them), until dropped; skips the test where the pool
/// grows on demand (`nr_overcommit_hugepages`), so that it cannot be
/// emptied.
fn empty_the_pool() -> Block {
    let overcommit = std::fs::read_to_string("/proc/sys/vm/nr_overcommit_hugepages")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if overcommit != 0 {
        harness::skip(format_args!(
            "the pool grows on demand (nr_overcommit_hugepages = {overcommit}): it cannot be emptied"
        ));
    }
    let unreserved = free_pages(2048) - pool_value("resv_hugepages");
    let block = options(false)
        .pinning(Pinning::BestEffort)
        .open(unreserved * HUGE)
        .unwrap();
    assert_eq!(
        free_pages(2048),
        pool_value("resv_hugepages"),
        "no unreserved page is left"
    );
    block
}

const DEADLINE: Duration = Duration::from_secs(20);

/// `attach` maps a huge-page memfd only when the caller accepts that its
/// sender can make a touch SIGBUS.
fn attaching_a_huge_page_memfd_needs_the_sigbus_opt_in() {
    let _pool = pool();
    need_pages(1);
    let mut owner = options(true).open(HUGE).unwrap();
    owner.as_bytes_mut()[0] = 5;
    let fd = owner.share().unwrap();
    let receiver = BlockOptions::new().pinning(Pinning::BestEffort).quiet(true);
    // SAFETY: the attach is expected to fail; no mapping is made.
    match unsafe { Block::attach_with(fd.try_clone().unwrap(), &receiver) } {
        Err(error @ Error::BadHandle { .. }) => {
            let text = error.to_string();
            assert!(text.contains("accept_huge_page_sigbus(true)"), "{text}");
            assert!(text.contains("SIGBUS"), "{text}");
        }
        other => panic!("a huge-page memfd attached without the opt-in: {other:?}"),
    }
    // SAFETY: the guest only reads, after the owner wrote, on this thread.
    let guest = unsafe { Block::attach_with(fd, &receiver.accept_huge_page_sigbus(true)) }.unwrap();
    assert_eq!(guest.granule(), HUGE);
    assert_eq!(guest.committed(), HUGE);
    assert_eq!(kernel_page_size(guest.as_ptr()), HUGE);
    assert_eq!(guest.as_bytes()[0], 5);
}

/// What the opt-in accepts: a sender punches a hole in its huge-page memfd
/// (the seals allow it) and the pool is emptied meanwhile; the receiver's
/// next touch of the hole is SIGBUS (in a forked child here, which shares
/// the mapping), pinned or not. Once a page is free again, the hole reads
/// as zero.
fn a_hole_punched_in_shared_huge_pages_is_sigbus_while_the_pool_is_empty() {
    let _pool = pool();
    need_pages(2);
    let mut owner = options(true)
        .pinning(Pinning::BestEffort)
        .open(2 * HUGE)
        .unwrap();
    owner.as_bytes_mut().fill(1);
    let fd = owner.share().unwrap();
    let receiver = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .accept_huge_page_sigbus(true);
    // SAFETY: the guest's pages are read by forked children and this thread
    // only, after the owner wrote them.
    let guest = unsafe { Block::attach_with(fd.try_clone().unwrap(), &receiver) }.unwrap();
    let before = free_pages(2048);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: a plain call on our descriptor.
    let rc = unsafe { libc::fallocate(fd.as_raw_fd(), mode, HUGE as i64, HUGE as i64) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(
        free_pages(2048),
        before + 1,
        "the page went back to the pool"
    );
    let drain = empty_the_pool();
    let hole = guest.as_ptr().wrapping_add(HUGE);
    let pid = fork(|| {
        // SAFETY: the child writes the shared hole, which must fault.
        unsafe { hole.write_volatile(2) };
        0
    });
    assert_eq!(wait(pid, DEADLINE), Ended::Signalled(libc::SIGBUS));
    let kept = guest.as_ptr();
    // SAFETY: the child reads a page the hole left alone.
    let pid = fork(|| i32::from(unsafe { kept.read_volatile() }));
    assert_eq!(wait(pid, DEADLINE), Ended::Exited(1));
    drop(drain);
    assert_eq!(guest.as_bytes()[HUGE], 0, "a free page fills the hole");
    drop(owner);
}

/// A forked child shares a private huge-page Block copy-on-write: its write
/// needs a free huge page for the copy, and with the pool empty it is
/// SIGBUS (the parent is never affected). A Block opened with
/// `inherit(false)` is not in the child at all: a touch there is SIGSEGV,
/// whatever the pool holds.
fn a_forked_child_needs_a_free_huge_page_for_each_it_writes() {
    let _pool = pool();
    need_pages(3);
    let pinned = options(false).pinning(Pinning::BestEffort);
    let mut inherited = pinned.open(HUGE).unwrap();
    let mut kept_out = pinned.inherit(false).open(HUGE).unwrap();
    inherited.as_bytes_mut().fill(1);
    kept_out.as_bytes_mut().fill(2);
    let ptr = inherited.as_ptr();
    // SAFETY: the child writes its copy of the page.
    let pid = fork(|| unsafe {
        ptr.write_volatile(3);
        i32::from(ptr.read_volatile())
    });
    assert_eq!(
        wait(pid, DEADLINE),
        Ended::Exited(3),
        "a free page for the copy"
    );
    let drain = empty_the_pool();
    let pid = fork(|| {
        // SAFETY: the child writes its copy of the page, which must fault.
        unsafe { ptr.write_volatile(3) };
        0
    });
    assert_eq!(
        wait(pid, DEADLINE),
        Ended::Signalled(libc::SIGBUS),
        "no free page for the copy"
    );
    let out = kept_out.as_ptr();
    // SAFETY: the child reads the range, which must fault.
    let pid = fork(|| i32::from(unsafe { out.read_volatile() }));
    assert_eq!(wait(pid, DEADLINE), Ended::Signalled(libc::SIGSEGV));
    inherited.as_bytes_mut().fill(4);
    kept_out.as_bytes_mut().fill(5);
    assert!(inherited.as_bytes().iter().all(|&b| b == 4));
    assert!(kept_out.as_bytes().iter().all(|&b| b == 5));
    drop(drain);
}

fn main() {
    harness::main(&[
        test!(a_huge_page_block_opens_pinned_and_reports_its_page_size),
        test!(a_huge_page_block_grows_and_shrinks_by_whole_pages),
        test!(too_few_huge_pages_is_a_typed_error_naming_the_pool),
        test!(attaching_a_huge_page_memfd_needs_the_sigbus_opt_in),
        test!(a_hole_punched_in_shared_huge_pages_is_sigbus_while_the_pool_is_empty),
        test!(a_forked_child_needs_a_free_huge_page_for_each_it_writes),
    ]);
}
