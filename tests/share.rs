//! Sharing a Block's pages: a second mapping here, a child process, handles
//! that are not Blocks, receivers following an owner that grows in another
//! process, and other holders of the fd trying to stop the owner.
#![cfg(unimem_linux)]

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::fork::{Ended, fork, wait};
use unimem::{Block, BlockOptions, Error, Pinning, Tape};

fn options() -> BlockOptions<'static> {
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .shared(true)
}

#[test]
fn a_second_mapping_sees_the_first_ones_writes() {
    let mut owner = options().open(3 * 4096).unwrap();
    owner.as_bytes_mut()[..5].copy_from_slice(b"hello");
    let fd = owner.share().unwrap();
    // SAFETY: the two mappings are used one after the other on this thread,
    // never with overlapping live views.
    let mut guest = unsafe { Block::attach_with(fd, &options()) }.unwrap();
    assert_eq!(guest.size(), owner.size());
    assert_ne!(guest.as_ptr(), owner.as_ptr(), "a distinct mapping");
    assert_eq!(&guest.as_bytes()[..5], b"hello");
    guest.as_bytes_mut()[4096] = 42;
    assert_eq!(owner.as_bytes()[4096], 42, "writes go both ways");
    drop(owner);
    assert_eq!(
        guest.as_bytes()[0],
        b'h',
        "pages outlive the owner's mapping"
    );
}

#[test]
fn a_child_process_sees_and_writes_the_same_pages() {
    let mut owner = options().label("unimem-share-test").open(1 << 16).unwrap();
    for (i, byte) in owner.as_bytes_mut().iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let fd = owner.share().unwrap();
    let child = spawn_child("child_attaches_and_answers", "UNIMEM_SHARE_FD", &fd);
    drop(fd);
    let output = child.wait_with_output().unwrap();
    check_child(&output);
    assert_eq!(&owner.as_bytes()[100..106], b"answer");
}

/// Runs the test `name` of this binary in a child process that inherits
/// `fd` (its number in the environment variable `var`), with its output
/// captured: the child's own test harness lines stay out of this test's
/// output.
fn spawn_child(name: &str, var: &str, fd: &OwnedFd) -> std::process::Child {
    // The duplicate is close-on-exec; clear that so the child inherits it.
    // SAFETY: F_SETFD on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(var, fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Fails with the child's output unless it succeeded.
fn check_child(output: &Output) {
    assert!(
        output.status.success(),
        "child failed: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs only inside the child spawned above.
#[test]
fn child_attaches_and_answers() {
    let Ok(fd) = std::env::var("UNIMEM_SHARE_FD") else {
        return;
    };
    // SAFETY: the parent passed us this inherited descriptor, which nothing
    // else in this process owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.parse().unwrap()) };
    // SAFETY: the parent does not touch the pages until we exit.
    let mut block = unsafe { Block::attach_with(fd, &options()) }.unwrap();
    assert_eq!(block.size(), 1 << 16);
    for (i, &byte) in block.as_bytes().iter().enumerate() {
        assert_eq!(byte, (i % 251) as u8, "byte {i}");
    }
    block.as_bytes_mut()[100..106].copy_from_slice(b"answer");
    std::io::stdout().flush().unwrap();
}

#[test]
fn shared_fds_cannot_resize_the_pages() {
    let block = options().open(4096).unwrap();
    let fd = block.share().unwrap();
    for size in [0, 8192] {
        // SAFETY: ftruncate on a descriptor we own.
        let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), size) };
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
    }
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    assert_ne!(seals & libc::F_SEAL_SEAL, 0, "seals cannot be changed");
}

#[test]
fn the_label_shows_in_proc_maps() {
    let block = options().label("unimem-label-test").open(4096).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|line| line.contains("/memfd:unimem-label-test"))
        .expect("a mapping named after the label");
    let start = usize::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
    assert_eq!(start, block.as_ptr() as usize);
}

fn attach_error(fd: OwnedFd) -> Error {
    // SAFETY: the attach is expected to fail; no mapping is made.
    match unsafe { Block::attach_with(fd, &options()) } {
        Ok(_) => panic!("attached a handle that is not a Block"),
        Err(error) => error,
    }
}

#[test]
fn handles_that_are_not_blocks_are_refused() {
    // A pipe is not a regular file.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe just created these; we own both.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(write);
    assert!(matches!(attach_error(read), Error::BadHandle { .. }));

    // A file on disk does not take seals.
    let path = std::env::temp_dir().join(format!("unimem-attach-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4096).unwrap();
    std::fs::remove_file(&path).unwrap();
    let error = attach_error(file.into());
    assert!(
        matches!(error, Error::BadHandle { .. }),
        "regular file: {error}"
    );

    // A memfd nobody sealed.
    // SAFETY: a NUL-terminated name.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: just created; ours.
    let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain call on our descriptor.
    assert_eq!(unsafe { libc::ftruncate(unsealed.as_raw_fd(), 4096) }, 0);
    let error = attach_error(unsealed);
    assert!(error.to_string().contains("not sealed"), "{error}");

    // A sealed but empty memfd.
    // SAFETY: a NUL-terminated name.
    let raw = unsafe {
        libc::memfd_create(
            c"empty".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    // SAFETY: just created; ours.
    let empty = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain call on our descriptor.
    let sealed = unsafe {
        libc::fcntl(
            empty.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(sealed, 0);
    let error = attach_error(empty);
    assert!(error.to_string().contains("empty"), "{error}");

    // /dev/null is a character device.
    let null = std::fs::File::open("/dev/null").unwrap();
    let error = attach_error(null.into());
    assert!(matches!(error, Error::BadHandle { .. }), "{error}");
}

#[test]
fn attach_checks_the_size_is_whole_pages() {
    // SAFETY: a NUL-terminated name.
    let raw =
        unsafe { libc::memfd_create(c"odd".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    // SAFETY: just created; ours.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain calls on our descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), 100), 0);
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        );
    }
    let error = attach_error(fd);
    assert!(
        error.to_string().contains("whole number of pages"),
        "{error}"
    );
}

/// A sealed, sparse memfd larger than the machine's memory costs its sender
/// nothing; attaching it pinned or prefaulted must fail before a page is
/// touched, not get the process killed.
#[test]
fn a_huge_sparse_memfd_is_refused_before_a_page_is_touched() {
    // SAFETY: a NUL-terminated name.
    let raw = unsafe {
        libc::memfd_create(
            c"sparse".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(raw >= 0);
    // SAFETY: just created; ours.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let physical = {
        // SAFETY: sysconf has no preconditions.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) } as u64;
        // SAFETY: as above.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
    };
    // SAFETY: plain calls on our descriptor.
    unsafe {
        assert_eq!(
            libc::ftruncate(fd.as_raw_fd(), (2 * physical) as libc::off_t),
            0
        );
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        );
    }
    let dup = fd.try_clone().unwrap();
    // SAFETY: the attach is expected to fail; no mapping is made.
    match unsafe { Block::attach(fd) } {
        Err(error @ Error::OutOfMemory { .. }) => {
            assert_eq!(error.raw_os_error(), Some(libc::ENOMEM));
        }
        other => panic!("attaching twice the machine's memory: {other:?}"),
    }
    // Neither pinned nor prefaulted, the same memfd is address space only.
    let lazy = BlockOptions::new().pinning(Pinning::Off).prefault(false);
    // SAFETY: nothing else maps these pages.
    let block = unsafe { Block::attach_with(dup, &lazy) }.unwrap();
    assert_eq!(block.committed() as u64, 2 * physical);
}

/// A growable shared Block is sealed against shrinking and against further
/// seals from the start, not against growing; a receiver that reserved room
/// follows the owner's growth.
#[test]
fn a_receiver_follows_a_growing_shared_block() {
    let page = unimem::page_size();
    let owner = options().capacity(64 * page).open(4 * page).unwrap();
    let fd = owner.share().unwrap();
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
    assert_ne!(seals & libc::F_SEAL_SEAL, 0, "no holder can add seals");
    assert_eq!(seals & libc::F_SEAL_GROW, 0, "growable");
    // SAFETY: writes are ordered by this thread alone.
    let guest = unsafe { Block::attach_with(fd, &options().capacity(64 * page)) }.unwrap();
    assert_eq!(guest.committed(), 4 * page);
    owner.commit(16 * page).unwrap();
    // SAFETY: the owner's pages, written through its own mapping before the
    // guest reads them on the same thread.
    unsafe { owner.as_ptr().add(10 * page).write(42) };
    assert_eq!(guest.follow().unwrap(), 16 * page);
    // SAFETY: committed in the guest's mapping now; the owner wrote it above.
    assert_eq!(unsafe { guest.as_ptr().add(10 * page).read() }, 42);
    owner.commit(64 * page).unwrap();
    assert_eq!(guest.follow().unwrap(), 64 * page);
}

/// How long a child process may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// What the owner grows to, a page at a time, while a receiver follows.
const GROWTH: usize = 64 << 20;
/// Bytes of the owner's first page that the two processes signal through.
const READY: usize = 0;
const DONE: usize = 1;

/// `offset` of a Block's mapping as an atomic byte.
///
/// # Safety
/// `offset` is committed in `block`, and every process accesses that byte
/// atomically only.
unsafe fn flag(block: &Block, offset: usize) -> &AtomicU8 {
    // SAFETY: the caller's contract; a byte is always aligned.
    unsafe { AtomicU8::from_ptr(block.as_ptr().add(offset)) }
}

/// The owner grows page by page in this process while a receiver in another
/// follows it and attaches afresh in a loop: every `follow()` and every
/// `attach` succeeds (a receiver that resized the memfd to what it last saw
/// failed with EPERM once the owner had grown past it), and the receiver
/// finally sees every page the owner wrote.
#[test]
fn a_receiver_follows_and_attaches_while_the_owner_grows_in_another_process() {
    let page = unimem::page_size();
    let owner = options().capacity(GROWTH).open(page).unwrap();
    let fd = owner.share().unwrap();
    let mut child = spawn_child("receiver_follows_and_attaches", "UNIMEM_FOLLOW_FD", &fd);
    drop(fd);
    let started = Instant::now();
    // SAFETY: the first page is committed; both processes use its first two
    // bytes atomically only.
    let (ready, done) = unsafe { (flag(&owner, READY), flag(&owner, DONE)) };
    // Acquire: pairs with the receiver's Release store once it follows.
    while ready.load(Ordering::Acquire) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            check_child(&child.wait_with_output().unwrap());
            panic!("the receiver left before it was ready: {status}");
        }
        assert!(started.elapsed() < DEADLINE, "the receiver never got ready");
        std::thread::yield_now();
    }
    for pages in 2..=GROWTH / page {
        if let Err(error) = owner.commit(pages * page) {
            child.kill().unwrap();
            panic!("the owner growing to {pages} pages: {error}");
        }
        // SAFETY: the page was committed just now; the receiver reads it
        // only after `done`.
        unsafe {
            owner
                .as_ptr()
                .add((pages - 1) * page)
                .cast::<u32>()
                .write_volatile(pages as u32)
        };
    }
    // Release: the tags written above are seen by the receiver's Acquire
    // load of `done`.
    done.store(1, Ordering::Release);
    let output = child.wait_with_output().unwrap();
    check_child(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The harness may print the test's name on the same line first.
    let line = stdout
        .lines()
        .find_map(|line| line.find("receiver:").map(|at| &line[at..]))
        .expect("the receiver's summary");
    println!("{line}");
}

/// Runs only inside the child spawned above: attaches, says it is ready,
/// then follows and attaches in a loop until the owner is done.
#[test]
fn receiver_follows_and_attaches() {
    let Ok(fd) = std::env::var("UNIMEM_FOLLOW_FD") else {
        return;
    };
    // SAFETY: the parent passed us this inherited descriptor, which nothing
    // else in this process owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.parse().unwrap()) };
    let page = unimem::page_size();
    let capacity = GROWTH;
    // SAFETY: this process only reads the pages, and only the flags before
    // the owner is done.
    let follower =
        unsafe { Block::attach_with(fd.try_clone().unwrap(), &options().capacity(capacity)) }
            .unwrap();
    // SAFETY: the first page is committed; both processes use its first two
    // bytes atomically only.
    let (ready, done) = unsafe { (flag(&follower, READY), flag(&follower, DONE)) };
    // Release: pairs with the owner's Acquire load before it grows.
    ready.store(1, Ordering::Release);
    let fresh = options().pinning(Pinning::Off).prefault(false);
    let (mut follows, mut attaches) = (0usize, 0usize);
    let mut errors = Vec::new();
    let mut seen = follower.committed();
    let started = Instant::now();
    loop {
        // Acquire: pairs with the owner's Release store after its last
        // commit, so the follow below sees the whole capacity.
        let finished = done.load(Ordering::Acquire) == 1;
        follows += 1;
        match follower.follow() {
            Ok(committed) => {
                assert!(committed >= seen, "{committed} after {seen}");
                seen = committed;
            }
            Err(error) => errors.push(format!("follow: {error}")),
        }
        attaches += 1;
        // SAFETY: the new mapping is only read, by this thread.
        match unsafe { Block::attach_with(fd.try_clone().unwrap(), &fresh.capacity(capacity)) } {
            Ok(block) => assert!(block.committed() >= page),
            Err(error) => errors.push(format!("attach: {error}")),
        }
        if finished {
            break;
        }
        if started.elapsed() > DEADLINE {
            errors.push("the owner never finished growing".to_owned());
            break;
        }
    }
    println!(
        "receiver: {follows} follows and {attaches} attaches while the owner grew to {} pages, {} errors",
        GROWTH / page,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, the first: {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(seen, capacity);
    for pages in 2..=GROWTH / page {
        // SAFETY: committed here, written by the owner before `done`.
        let tag = unsafe {
            AtomicU32::from_ptr(follower.as_ptr().add((pages - 1) * page).cast())
                .load(Ordering::Relaxed)
        };
        assert_eq!(tag, pages as u32, "page {}", pages - 1);
    }
    std::io::stdout().flush().unwrap();
}

/// A receiver that reserved less than the owner grows to follows up to its
/// capacity and says that the owner went further.
#[test]
fn a_receiver_follows_up_to_its_capacity_and_says_when_the_owner_grew_past_it() {
    let page = unimem::page_size();
    let owner = options().capacity(64 * page).open(4 * page).unwrap();
    // SAFETY: the guest only reads, after the owner wrote, on this thread.
    let guest =
        unsafe { Block::attach_with(owner.share().unwrap(), &options().capacity(16 * page)) }
            .unwrap();
    owner.commit(32 * page).unwrap();
    // SAFETY: committed above; the guest reads it below.
    unsafe { owner.as_ptr().add(10 * page).write(42) };
    for _ in 0..2 {
        match guest.follow() {
            Err(Error::Capacity {
                requested,
                capacity,
            }) => assert_eq!((requested, capacity), (32 * page, 16 * page)),
            other => panic!("following past the capacity: {other:?}"),
        }
        assert_eq!(guest.committed(), 16 * page, "mapped up to the capacity");
    }
    // SAFETY: committed in the guest's mapping; written by the owner above.
    assert_eq!(unsafe { guest.as_ptr().add(10 * page).read() }, 42);
}

/// Only the owner grows the memfd: a receiver commits what the owner
/// committed and no further.
#[test]
fn an_attached_block_never_resizes_the_memfd() {
    let page = unimem::page_size();
    let owner = options().capacity(64 * page).open(4 * page).unwrap();
    let fd = owner.share().unwrap();
    // SAFETY: the guest's pages are not accessed.
    let guest =
        unsafe { Block::attach_with(fd.try_clone().unwrap(), &options().capacity(64 * page)) }
            .unwrap();
    match guest.commit(8 * page) {
        Err(error @ Error::InvalidArgument { .. }) => {
            assert!(error.to_string().contains("follow()"), "{error}")
        }
        other => panic!("a receiver committing past the owner: {other:?}"),
    }
    assert_eq!(memfd_size(&fd), 4 * page, "the memfd kept its size");
    assert_eq!(guest.committed(), 4 * page);
    owner.commit(8 * page).unwrap();
    guest.commit(6 * page).unwrap();
    assert_eq!(guest.follow().unwrap(), 8 * page);
    assert_eq!(memfd_size(&fd), 8 * page);
}

/// A sender can grow its memfd to any size at no cost: a receiver following
/// it with prefault or pinning checks what it would fault in against the
/// memory available before touching a page.
#[test]
fn following_a_huge_sparse_growth_is_refused_before_a_page_is_touched() {
    let page = unimem::page_size();
    // SAFETY: a NUL-terminated name.
    let raw = unsafe {
        libc::memfd_create(
            c"sender".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(raw >= 0);
    // SAFETY: just created; ours.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain calls on our descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), page as libc::off_t), 0);
        assert_eq!(
            libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK),
            0
        );
    }
    let physical = {
        // SAFETY: sysconf has no preconditions.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) } as usize;
        pages * page
    };
    // SAFETY: nothing else maps these pages in this process.
    let guest =
        unsafe { Block::attach_with(fd.try_clone().unwrap(), &options().capacity(2 * physical)) }
            .unwrap();
    // SAFETY: a plain call on our descriptor.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), (2 * physical) as libc::off_t) };
    assert_eq!(rc, 0);
    match guest.follow() {
        Err(error @ Error::OutOfMemory { .. }) => {
            assert_eq!(error.raw_os_error(), Some(libc::ENOMEM))
        }
        other => panic!("following twice the machine's memory: {other:?}"),
    }
    assert_eq!(guest.committed(), page, "nothing more was mapped");
}

/// The size of the memfd behind `fd`.
fn memfd_size(fd: &OwnedFd) -> usize {
    // SAFETY: `stat` is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st.st_size as usize
}

/// Runs `call` (raw system calls only) in another process, a forked child
/// that holds the same fds, and returns the errno it failed with, or 0.
fn in_another_process(call: impl FnOnce() -> libc::c_int) -> i32 {
    let pid = fork(|| {
        if call() == 0 {
            0
        } else {
            // SAFETY: reads this thread's errno.
            unsafe { *libc::__errno_location() }
        }
    });
    match wait(pid, DEADLINE) {
        Ended::Exited(errno) => errno,
        other => panic!("the other process: {other:?}"),
    }
}

/// No other holder of the fd can seal the memfd: each seal that would stop
/// the owner's growth (against writing, future writes, growing) is refused,
/// and so is sealing the seals; the owner then grows to its capacity.
#[test]
fn another_holder_of_the_fd_cannot_seal_it() {
    let page = unimem::page_size();
    let owner = options().capacity(32 * page).open(page).unwrap();
    let fd = owner.share().unwrap();
    let raw: RawFd = fd.as_raw_fd();
    for (name, seal) in [
        ("F_SEAL_FUTURE_WRITE", libc::F_SEAL_FUTURE_WRITE),
        ("F_SEAL_WRITE", libc::F_SEAL_WRITE),
        ("F_SEAL_GROW", libc::F_SEAL_GROW),
        ("F_SEAL_SEAL", libc::F_SEAL_SEAL),
    ] {
        // SAFETY: a plain call on a descriptor the child holds.
        let errno = in_another_process(|| unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, seal) });
        assert_eq!(errno, libc::EPERM, "another process adding {name}");
    }
    for pages in 2..=32 {
        owner
            .commit(pages * page)
            .unwrap_or_else(|error| panic!("growing to {pages} pages: {error}"));
    }
    // SAFETY: committed; written and read on this thread only.
    unsafe {
        owner.as_ptr().add(31 * page).write(7);
        assert_eq!(owner.as_ptr().add(31 * page).read(), 7);
    }
}

/// Another holder may grow the memfd (`ftruncate` or `fallocate` past its
/// end, even to a size of no whole pages): the owner goes on committing
/// below and past that size, and a Tape over it takes on.
#[test]
fn another_holder_growing_the_memfd_does_not_stop_the_owner() {
    let page = unimem::page_size();
    let tape = Tape::open_with(page, &options().capacity(64 * page)).unwrap();
    let fd = tape.block().share().unwrap();
    let raw = fd.as_raw_fd();
    let past = (128 * page + 100) as libc::off_t;
    // SAFETY: a plain call on a descriptor the child holds.
    let errno = in_another_process(|| unsafe { libc::ftruncate(raw, past) });
    assert_eq!(errno, 0, "growing is not sealed");
    for i in 0..64 {
        assert!(tape.take(page, page).is_some(), "take {i} of a page");
    }
    assert!(tape.take(1, 1).is_none(), "the Tape is full");

    let owner = options().capacity(64 * page).open(page).unwrap();
    let fd = owner.share().unwrap();
    let raw = fd.as_raw_fd();
    let len = (40 * page) as libc::off_t;
    // SAFETY: a plain call on a descriptor the child holds.
    let errno = in_another_process(|| unsafe { libc::fallocate(raw, 0, 0, len) });
    assert_eq!(errno, 0, "fallocate past the end grows the memfd");
    for pages in 2..=64 {
        owner
            .commit(pages * page)
            .unwrap_or_else(|error| panic!("growing to {pages} pages: {error}"));
    }
    // A receiver maps what the memfd's size says, which another holder
    // made larger than the owner's capacity: it follows up to its own
    // capacity and says so.
    let shrink = 0;
    // SAFETY: a plain call on a descriptor the child holds.
    let errno = in_another_process(|| unsafe { libc::ftruncate(raw, shrink) });
    assert_eq!(errno, libc::EPERM, "shrinking is sealed");
    // SAFETY: the guest's pages are not accessed.
    let guest =
        unsafe { Block::attach_with(fd.try_clone().unwrap(), &options().capacity(64 * page)) }
            .unwrap();
    assert_eq!(guest.committed(), 64 * page);
    let grown = (256 * page) as libc::off_t;
    // SAFETY: a plain call on a descriptor the child holds.
    let errno = in_another_process(|| unsafe { libc::ftruncate(raw, grown) });
    assert_eq!(errno, 0);
    assert!(matches!(
        guest.follow(),
        Err(Error::Capacity { requested, .. }) if requested == 256 * page
    ));
}

/// Another holder can punch a hole in the memfd (it may write any byte
/// anyway): the pages read as zero, and the owner goes on using and growing
/// its Block.
#[test]
fn another_holder_punching_a_hole_zeroes_pages_and_the_owner_goes_on() {
    let page = unimem::page_size();
    let mut owner = options().capacity(8 * page).open(4 * page).unwrap();
    owner.as_bytes_mut().fill(0xAB);
    let fd = owner.share().unwrap();
    let raw = fd.as_raw_fd();
    let (offset, len) = (page as libc::off_t, (2 * page) as libc::off_t);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: a plain call on a descriptor the child holds.
    let errno = in_another_process(|| unsafe { libc::fallocate(raw, mode, offset, len) });
    assert_eq!(errno, 0, "hole punching is allowed under these seals");
    let bytes = owner.as_bytes();
    assert!(bytes[..page].iter().all(|&b| b == 0xAB));
    assert!(bytes[page..3 * page].iter().all(|&b| b == 0), "the hole");
    assert!(bytes[3 * page..].iter().all(|&b| b == 0xAB));
    owner.as_bytes_mut().fill(0xCD);
    owner.commit(8 * page).unwrap();
    owner.as_bytes_mut().fill(0xEF);
    assert!(owner.as_bytes().iter().all(|&b| b == 0xEF));
}
