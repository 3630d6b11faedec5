//! Sharing a Block's pages: a second mapping here, a child process, and
//! handles that are not Blocks.
#![cfg(all(target_os = "linux", not(miri)))]

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use unimem::{Block, BlockOptions, Error, Pinning};

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
    // The duplicate is close-on-exec; clear that so the child inherits it.
    let fd = owner.share().unwrap();
    // SAFETY: F_SETFD on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_attaches_and_answers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("UNIMEM_SHARE_FD", fd.as_raw_fd().to_string())
        .status()
        .unwrap();
    drop(fd);
    assert!(status.success(), "child failed: {status}");
    assert_eq!(&owner.as_bytes()[100..106], b"answer");
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

/// A growable shared Block is sealed against shrinking only; a receiver that
/// reserved room follows the owner's growth, and the seals close once the
/// whole capacity is committed.
#[test]
fn a_receiver_follows_a_growing_shared_block() {
    let page = unimem::page_size();
    let owner = options().capacity(64 * page).open(4 * page).unwrap();
    let fd = owner.share().unwrap();
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
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
    let fd = owner.share().unwrap();
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    assert_ne!(seals & libc::F_SEAL_GROW, 0, "sealed once full");
    assert_ne!(seals & libc::F_SEAL_SEAL, 0);
    assert_eq!(guest.follow().unwrap(), 64 * page);
}
