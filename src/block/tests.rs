use super::*;
use crate::testing::options;

/// 1 MiB, or less under Miri.
const MIB: usize = if cfg!(miri) { 64 << 10 } else { 1 << 20 };

#[test]
fn sizes_round_to_pages() {
    let page = page_size();
    assert!(page.is_power_of_two());
    let block = options().open(1).unwrap();
    assert_eq!(block.size(), page);
    assert_eq!(block.committed(), page);
    assert_eq!(block.capacity(), page);
    assert_eq!(block.as_ptr().addr() % page, 0);
    let block = options().open(page + 1).unwrap();
    assert_eq!(block.size(), 2 * page);
}

#[test]
fn bad_sizes_are_typed_errors() {
    assert!(matches!(options().open(0), Err(Error::ZeroSize)));
    assert!(matches!(
        options().open(usize::MAX),
        Err(Error::Overflow {
            requested: usize::MAX
        })
    ));
    assert!(matches!(
        options().open(isize::MAX as usize + 2),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        options().capacity(usize::MAX).open(4096),
        Err(Error::Overflow { .. })
    ));
}

/// Sizes that round and fit the address space, but that no machine can
/// fault in, fail at once with ENOMEM; reserved without touching them, the
/// same size is address space only.
#[cfg(unimem_linux)]
#[test]
fn more_than_physical_memory_is_an_error_when_prefaulted() {
    let huge = 1usize << 46;
    for opts in [BlockOptions::new().quiet(true), options()] {
        match opts.open(huge) {
            Err(error @ Error::OutOfMemory { .. }) => {
                assert_eq!(error.raw_os_error(), Some(12));
                assert!(
                    error.to_string().contains("cannot be faulted in"),
                    "{error}"
                );
            }
            other => panic!("prefaulting 64 TiB gave {other:?}"),
        }
    }
    // Reserved but not committed: address space only.
    let reserved = options().capacity(huge).open(4096).unwrap();
    assert_eq!(reserved.capacity(), huge);
    assert_eq!(reserved.committed(), 4096);
}

#[test]
fn label_with_nul_is_rejected() {
    assert!(matches!(
        options().label("a\0b").open(4096),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn views_see_the_same_bytes() {
    let mut block = options().open(4096).unwrap();
    assert!(
        block.as_bytes().iter().all(|&b| b == 0),
        "fresh blocks are zero"
    );
    block.as_f32_mut()[1] = 1.0;
    assert_eq!(&block.as_bytes()[4..8], &1.0f32.to_ne_bytes());
    block.as_u16_mut()[0] = 0xBEEF;
    assert_eq!(block.as_u16()[0], 0xBEEF);
    assert_eq!(block.as_f32().len(), block.size() / 4);
    assert_eq!(block.as_u16().len(), block.size() / 2);
    assert!(block.contains(block.as_ptr()));
    assert!(block.contains(block.as_ptr().wrapping_add(block.size() - 1)));
    assert!(!block.contains(block.as_ptr().wrapping_add(block.capacity())));
    assert!(!block.contains(block.as_ptr().wrapping_sub(1)));
}

#[test]
fn address_is_stable_across_moves() {
    let block = options().open(4096).unwrap();
    let ptr = block.as_ptr();
    let moved = std::thread::spawn(move || block).join().unwrap();
    assert_eq!(moved.as_ptr(), ptr);
    let region = moved.into_region();
    assert_eq!(region.as_ptr(), ptr);
}

/// Committing more never moves the Block, keeps what was written, and the
/// new part reads as zero.
#[test]
fn a_reserved_block_commits_in_place() {
    let mut block = options().capacity(16 * MIB).open(MIB).unwrap();
    let ptr = block.as_ptr();
    assert_eq!((block.committed(), block.capacity()), (MIB, 16 * MIB));
    block.as_bytes_mut().fill(7);
    block.commit(4 * MIB + 1).unwrap();
    assert_eq!(block.as_ptr(), ptr);
    assert_eq!(block.committed(), 4 * MIB + page_size());
    let bytes = block.as_bytes();
    assert!(bytes[..MIB].iter().all(|&b| b == 7));
    assert!(bytes[MIB..].iter().all(|&b| b == 0));
    block.commit(2 * MIB).unwrap();
    assert_eq!(
        block.committed(),
        4 * MIB + page_size(),
        "nothing taken back"
    );
    assert!(matches!(
        block.commit(16 * MIB + 1),
        Err(Error::Capacity { capacity, .. }) if capacity == 16 * MIB
    ));
    block.commit(16 * MIB).unwrap();
    assert_eq!(block.as_bytes().len(), 16 * MIB);
}

/// A reservation can start with nothing committed.
#[test]
fn a_block_can_open_with_nothing_committed() {
    let block = options().capacity(4 * MIB).open(0).unwrap();
    assert_eq!(block.committed(), 0);
    assert!(block.as_bytes().is_empty());
    block.commit(1).unwrap();
    assert_eq!(block.committed(), page_size());
}

/// Decommitting gives the tail back; committed again, it reads as zero.
#[test]
fn decommitted_pages_come_back_zero() {
    let mut block = options().capacity(8 * MIB).open(4 * MIB).unwrap();
    block.as_bytes_mut().fill(0xA5);
    block.decommit(MIB).unwrap();
    assert_eq!(block.committed(), MIB);
    assert!(block.as_bytes().iter().all(|&b| b == 0xA5));
    block.commit(4 * MIB).unwrap();
    let bytes = block.as_bytes();
    assert!(bytes[..MIB].iter().all(|&b| b == 0xA5));
    assert!(bytes[MIB..].iter().all(|&b| b == 0), "fresh pages");
    block.decommit(0).unwrap();
    assert_eq!(block.committed(), 0);
}

/// Watchers see every commit before it is published, and a watched Block
/// refuses to decommit.
#[test]
fn watchers_see_commits_and_hold_the_pages() {
    use core::sync::atomic::AtomicUsize;

    static SEEN: AtomicUsize = AtomicUsize::new(0);
    unsafe fn committed(data: *const (), _base: NonNull<u8>, from: usize, to: usize) {
        // SAFETY: registered with a pointer to a Region below.
        let region = unsafe { &*data.cast::<Region>() };
        assert_eq!(region.committed(), from, "told before it is published");
        SEEN.fetch_add(to - from, Ordering::Relaxed);
    }
    static REUSED: AtomicUsize = AtomicUsize::new(0);
    unsafe fn reused(_data: *const ()) {
        REUSED.fetch_add(1, Ordering::Relaxed);
    }
    let mut block = options().capacity(4 * MIB).open(MIB).unwrap();
    let watcher = Watcher {
        data: core::ptr::from_ref::<Region>(&block).cast(),
        committed,
        reused,
    };
    assert!(matches!(block.watch(watcher), Watch::Added(committed) if committed == MIB));
    assert!(matches!(block.watch(watcher), Watch::Already));
    block.commit(3 * MIB).unwrap();
    assert_eq!(SEEN.load(Ordering::Relaxed), 2 * MIB);
    assert!(matches!(block.decommit(0), Err(Error::Registered)));
    assert_eq!(block.committed(), 3 * MIB);
    block.reuse();
    assert_eq!(REUSED.load(Ordering::Relaxed), 1, "told of the reuse");
    block.unwatch(watcher.data);
    block.reuse();
    assert_eq!(REUSED.load(Ordering::Relaxed), 1, "no longer told");
    block.commit(4 * MIB).unwrap();
    assert_eq!(SEEN.load(Ordering::Relaxed), 2 * MIB, "no longer told");
    block.decommit(0).unwrap();
}

#[cfg(unimem_linux)]
mod linux {
    use super::*;

    /// Lines of /proc/self/maps covering `ptr`.
    fn mapping_of(ptr: *mut u8) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find(|line| {
                let range = line.split(' ').next().unwrap();
                let (start, end) = range.split_once('-').unwrap();
                let start = usize::from_str_radix(start, 16).unwrap();
                let end = usize::from_str_radix(end, 16).unwrap();
                (start..end).contains(&ptr.addr())
            })
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether this kernel names anonymous memory (`CONFIG_ANON_VMA_NAME`).
    fn kernel_names_anonymous_memory() -> bool {
        let block = options().pinning(Pinning::Off).open(4096).unwrap();
        // SAFETY: names our own mapping; the name is NUL-terminated.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_VMA,
                libc::PR_SET_VMA_ANON_NAME as libc::c_ulong,
                block.as_ptr(),
                4096usize,
                c"probe".as_ptr(),
            )
        };
        rc == 0
    }

    #[test]
    fn a_private_block_is_private_and_labelled() {
        let block = options().label("unimem-private-test").open(4096).unwrap();
        let line = mapping_of(block.as_ptr());
        assert!(line.contains(" rw-p "), "{line}");
        if kernel_names_anonymous_memory() {
            assert!(
                line.contains("[anon:unimem-private-test]"),
                "the label names the mapping: {line}"
            );
        } else {
            // Advice only: the Block works the same without a name.
            assert!(!line.contains("[anon:"), "{line}");
        }
        match block.share() {
            Err(error @ Error::InvalidArgument { .. }) => {
                assert!(error.to_string().contains("shared(true)"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert!(block.handle().is_none());
    }

    #[test]
    fn a_shared_block_is_a_sealed_memfd_that_cannot_decommit() {
        let mut block = options()
            .shared(true)
            .label("unimem-shared-test")
            .open(4096)
            .unwrap();
        let line = mapping_of(block.as_ptr());
        assert!(line.contains(" rw-s "), "{line}");
        assert!(line.contains("/memfd:unimem-shared-test"), "{line}");
        assert!(block.handle().is_some());
        assert!(matches!(block.decommit(0), Err(Error::Unsupported { .. })));
    }

    /// Large private Blocks are 2 MiB-aligned so that transparent huge
    /// pages can back them.
    #[test]
    fn large_private_blocks_are_aligned_for_huge_pages() {
        let block = options().capacity(64 << 20).open(0).unwrap();
        assert_eq!(block.as_ptr().addr() % COMMIT_STEP, 0);
    }
}

/// Locked bytes of this process's mappings that start in `start..end`
/// (from `/proc/self/smaps`: other tests lock memory elsewhere at the same
/// time, so the process-wide `VmLck` cannot be compared).
#[cfg(unimem_linux)]
fn locked_in(start: usize, end: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut locked = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let from = first
            .split_once('-')
            .and_then(|(from, _)| usize::from_str_radix(from, 16).ok());
        if let Some(from) = from {
            inside = (start..end).contains(&from);
        } else if let Some(kib) = line.strip_prefix("Locked:").filter(|_| inside) {
            locked += kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .unwrap()
                * 1024;
        }
    }
    locked
}

#[cfg(unimem_linux)]
#[test]
fn a_refused_part_of_a_lock_in_threads_unlocks_the_others() {
    // 128 MiB with a hole near its end: the part holding the hole cannot be
    // locked (ENOMEM), the others can. Locking in threads must then undo
    // the parts it locked, so the range is left as it was.
    const LEN: usize = 128 << 20;
    // SAFETY: a fresh private mapping of our own, unmapped below.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let hole = LEN - (4 << 20);
    // SAFETY: a part of the mapping above, which nothing uses.
    let unmapped = unsafe { libc::munmap(base.cast::<u8>().add(hole).cast(), 2 << 20) };
    assert_eq!(unmapped, 0);
    let base = NonNull::new(base.cast::<u8>()).unwrap();
    let range = (base.as_ptr().addr(), base.as_ptr().addr() + LEN);
    // SAFETY: ours and unused; the hole makes one part fail.
    let locked = unsafe { populate::lock_in_threads(base, 0, LEN, None) };
    assert!(!locked, "a part holding a hole cannot lock");
    assert_eq!(
        locked_in(range.0, range.1),
        0,
        "the parts that locked were unlocked"
    );
    // SAFETY: our mapping (munmap skips the hole).
    assert_eq!(unsafe { libc::munmap(base.as_ptr().cast(), LEN) }, 0);
}

#[cfg(unimem_linux)]
#[test]
fn populate_threads_move_onto_the_cpus_given() {
    // 64 MiB, so that every thread has a part; each reports the CPUs it
    // may run on once moved. The last CPU this thread may use stands for a
    // node's CPUs (on a machine of one node, a node's CPUs are all of
    // them, and a thread that did not move would pass unnoticed).
    let allowed = numa::Cpus::of_this_thread();
    let cpu = (0..8 * size_of::<libc::cpu_set_t>())
        .rev()
        .find(|&cpu| allowed.has(cpu))
        .unwrap();
    let target = numa::Cpus::just(cpu);
    let block = options().prefault(false).open(64 << 20).unwrap();
    let seen = populate::each_part(block.base(), 0, 64 << 20, Some(&target), |_, _| {
        let now = numa::Cpus::of_this_thread();
        (now.count(), now.has(cpu))
    });
    assert!(!seen.is_empty());
    for (_, _, (count, has)) in seen {
        assert_eq!((count, has), (1, true), "a populate thread did not move");
    }
    // Without CPUs to move to, the threads keep this thread's.
    let seen = populate::each_part(block.base(), 0, 64 << 20, None, |_, _| {
        numa::Cpus::of_this_thread().count()
    });
    for (_, _, count) in seen {
        assert_eq!(count, allowed.count());
    }
}

#[cfg(unimem_linux)]
#[test]
fn a_nodes_cpus_are_ones_this_thread_may_use() {
    let allowed = numa::Cpus::of_this_thread();
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_default();
    for node in Node::with_memory().unwrap() {
        let Some(cpus) = numa::cpus(node) else {
            continue;
        };
        for cpu in 0..8 * size_of::<libc::cpu_set_t>() {
            assert!(!cpus.has(cpu) || allowed.has(cpu), "cpu {cpu} of {node}");
        }
        if online.trim() == "0" {
            // One node: its CPUs are all of this thread's.
            assert_eq!(cpus.count(), allowed.count());
        }
    }
}

#[cfg(not(unimem_linux))]
#[test]
fn nodes_are_unsupported_here() {
    let options = options().node(Some(Node::new(0)));
    assert!(matches!(options.open(4096), Err(Error::Unsupported { .. })));
    assert!(matches!(
        crate::Tape::open_with(4096, &options),
        Err(Error::Unsupported { .. })
    ));
    let block = self::options().open(4096).unwrap();
    assert_eq!(block.node(), None);
    assert!(matches!(block.nodes(), Err(Error::Unsupported { .. })));
    assert!(matches!(
        Node::with_memory(),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        Node::near_pci("0000:00:00.0"),
        Err(Error::Unsupported { .. })
    ));
}
