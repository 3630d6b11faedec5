//! Pinning is real: locked memory grows by the Block's size, and a refused
//! `mlock` is an error unless pinning is best-effort.
//!
//! One test per process section: `VmLck` is process-wide, so the checks run
//! in sequence inside one test, and the failure case runs in a child process
//! with a tiny RLIMIT_MEMLOCK and without CAP_IPC_LOCK.
#![cfg(unimem_linux)]

use std::process::Command;

use unimem::{Block, BlockOptions, Error, Pinning, Tape};

/// Locked memory of this process, in bytes.
fn vm_lck() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn pinned_blocks_grow_locked_memory_by_their_size() {
    if std::env::var_os("UNIMEM_PIN_CHILD").is_some() {
        return;
    }
    let bytes = 4 << 20;
    for prefault in [true, false] {
        let before = vm_lck();
        let options = BlockOptions::new()
            .prefault(prefault)
            .pinning(Pinning::Required);
        let block = match Block::open_with(bytes, &options) {
            Ok(block) => block,
            Err(error @ Error::Pin { .. }) => {
                // Not allowed to lock 4 MiB here: the error must say so.
                assert!(error.to_string().contains("RLIMIT_MEMLOCK"), "{error}");
                eprintln!("skipping the VmLck check: {error}");
                return;
            }
            Err(error) => panic!("{error}"),
        };
        assert!(block.is_pinned());
        assert_eq!(vm_lck() - before, block.size(), "prefault: {prefault}");
        drop(block);
        assert_eq!(vm_lck(), before, "unmapping unlocks");
    }
}

#[test]
fn refused_pinning_is_an_error_unless_best_effort() {
    if std::env::var_os("UNIMEM_PIN_CHILD").is_some() {
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_without_memlock",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("UNIMEM_PIN_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr;
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("child checked pinning"), "{text}");
    // The refusal is told once, in one line, whatever happened after; the
    // required open's error was returned and not written too.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mlock refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("unimem: mlock refused"), "{stderr}");
    assert!(lines[0].contains("Going on unpinned"), "{stderr}");
    assert!(
        !stderr.contains("the allocation that needed it"),
        "no allocation was refused: {stderr}"
    );
    for hint in [
        "RLIMIT_MEMLOCK is 65536 bytes",
        "/etc/security/limits.conf",
        "LimitMEMLOCK=",
        "--ulimit memlock=-1",
        "setcap cap_ipc_lock=+ep",
        "Pinning::BestEffort",
    ] {
        assert!(lines[0].contains(hint), "{hint} missing: {}", lines[0]);
    }
}

/// Runs only in the child: drop the right to lock, then try.
#[test]
fn child_without_memlock() {
    if std::env::var_os("UNIMEM_PIN_CHILD").is_none_or(|v| v != "1") {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    // SAFETY: setrlimit with a valid struct; this child process is ours to limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    drop_ipc_lock();

    // Quiet: refused without a word.
    let quiet = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .open(1 << 20)
        .unwrap();
    assert!(!quiet.is_pinned());

    // Required: the error is returned, with the hint, and nothing is written.
    let error = BlockOptions::new()
        .pinning(Pinning::Required)
        .open(1 << 20)
        .expect_err("mlock of 1 MiB over a 64 KiB limit");
    assert!(
        matches!(error, Error::Pin { bytes, .. } if bytes == 1 << 20),
        "{error}"
    );
    let errno = error.raw_os_error().unwrap();
    assert!(
        errno == libc::ENOMEM || errno == libc::EPERM,
        "errno {errno}"
    );
    assert!(error.to_string().contains("RLIMIT_MEMLOCK"), "{error}");

    // The default is best effort: the open succeeds, unpinned, and says so
    // on standard error (once).
    let block = Block::open(1 << 20).unwrap();
    assert!(!block.is_pinned());
    assert_eq!(block.size(), 1 << 20);

    // Under the limit, pinning still works.
    let small = Block::open(4096).unwrap();
    assert!(small.is_pinned());

    // A lazy Tape pins what the limit allows and goes on unpinned past it.
    let tape = Tape::lazy(64 << 20);
    let p = tape.take(8 << 20, 64).expect("unpinned past the limit");
    // SAFETY: 8 MiB taken just above.
    unsafe { p.write_bytes(1, 8 << 20) };
    let block = tape.block();
    assert!(block.committed() >= 8 << 20);
    assert!(block.locked() <= 64 << 10, "{block:?}");
    assert!(!block.is_pinned());

    // `main` returning the error prints its Debug form: the hint is there.
    let debug = format!("{error:?}");
    assert!(debug.contains("limits.conf"), "{debug}");
    println!("child checked pinning");
}

#[test]
fn a_large_commit_locked_in_parts_keeps_a_locked_prefix() {
    if std::env::var_os("UNIMEM_PIN_CHILD").is_some() {
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_with_a_100_mib_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("UNIMEM_PIN_CHILD", "limit")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("child checked the locked prefix"), "{text}");
}

/// Runs only in that child: a 128 MiB Block is locked from several threads,
/// one part each; with a 100 MiB limit some part is refused, so the parts
/// that were locked must be unlocked again and the Block locked, a step at
/// a time, from its start: the locked bytes are a prefix, and they are what
/// the kernel counts.
#[test]
fn child_with_a_100_mib_limit() {
    if std::env::var_os("UNIMEM_PIN_CHILD").is_none_or(|v| v != "limit") {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct; this child
    // process is ours to limit. An ordinary user's hard limit may be lower
    // (8 MiB): then no part locks, and the checks below still hold.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit), 0);
        let wanted = libc::rlimit {
            rlim_cur: 100 << 20,
            rlim_max: 100 << 20,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) == 0 {
            limit = wanted;
        } else {
            limit.rlim_cur = limit.rlim_max.min(100 << 20);
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit), 0);
        }
    }
    println!("RLIMIT_MEMLOCK: {} bytes", limit.rlim_cur);
    drop_ipc_lock();
    let before = vm_lck();
    let block = BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .open(128 << 20)
        .unwrap();
    assert!(!block.is_pinned());
    let allowed = (limit.rlim_cur as usize - before) / (2 << 20) * (2 << 20);
    assert_eq!(block.locked(), allowed, "{block:?}");
    assert_eq!(vm_lck() - before, block.locked(), "{block:?}");
    println!("child checked the locked prefix");
}

/// Clears CAP_IPC_LOCK from this thread's effective set (root ignores
/// RLIMIT_MEMLOCK with it).
fn drop_ipc_lock() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a version-3 header and two data structs, as
    // the kernel expects.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_IPC_LOCK);
        assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0);
    }
}
