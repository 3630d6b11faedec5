//! Two processes, one set of pinned pages: the parent fills a tensor in a
//! shared Block, a child process attaches the Block's memfd and reduces the
//! tensor in place, and the parent reads the answer. No bytes are copied.
//!
//! `Block::share` returns a close-on-exec descriptor, so that no program
//! the process starts inherits it by accident. The parent hands it to this
//! one child on purpose: between `fork` and `exec`, the child duplicates it
//! onto descriptor 3 (`dup2` clears close-on-exec on the copy) and is told
//! that number. (Over a Unix socket, `SCM_RIGHTS` sends it to any process.)
//!
//! Run with `cargo run --example share`.

#[cfg(unimem_linux)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Instant;

    use unimem::{Block, BlockOptions};

    const FLOATS: usize = 1 << 22; // 16 MiB of f32

    if let Some(fd) = std::env::args().nth(1) {
        // Child: map the parent's pages and sum the tensor where it lies.
        // SAFETY: the parent made this descriptor for us (see below), and
        // nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd.parse()?) };
        // SAFETY: the parent waits for us to exit before touching the pages.
        let mut block = unsafe { Block::attach(fd) }?;
        let floats = block.as_f32_mut();
        let sum: f64 = floats[1..=FLOATS].iter().map(|&x| f64::from(x)).sum();
        floats[0] = sum as f32;
        return Ok(());
    }

    let started = Instant::now();
    // Shared: a sealed memfd another process can map. Pinned where the
    // locked-memory limit allows (the default), unpinned past it.
    let mut block = BlockOptions::new().shared(true).open((FLOATS + 1) * 4)?;
    println!(
        "opened a {} MiB block in {:?} (pinned: {})",
        block.size() >> 20,
        started.elapsed(),
        block.is_pinned()
    );
    for (i, x) in block.as_f32_mut()[1..=FLOATS].iter_mut().enumerate() {
        *x = (i % 8) as f32;
    }

    // The shared fd is close-on-exec: the child gets a copy at descriptor 3,
    // made between fork and exec, which does not close on exec.
    const CHILD_FD: i32 = 3;
    let fd = block.share()?;
    let raw = fd.as_raw_fd();
    let mut child = Command::new(std::env::current_exe()?);
    child.arg(CHILD_FD.to_string());
    // SAFETY: the closure runs in the forked child before exec and calls
    // only dup2, which is async-signal-safe; `raw` stays open in the parent
    // (and so in the child) until the command has started.
    unsafe {
        child.pre_exec(move || {
            if libc::dup2(raw, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let status = child.status()?;
    drop(fd);
    assert!(status.success(), "child failed: {status}");
    let expected = (0..FLOATS).map(|i| (i % 8) as f64).sum::<f64>() as f32;
    let answer = block.as_f32()[0];
    println!(
        "child attached {} MiB and wrote back the sum {answer} in {:?} (expected {expected})",
        block.size() >> 20,
        started.elapsed()
    );
    assert_eq!(answer, expected);
    Ok(())
}

#[cfg(not(unimem_linux))]
fn main() {
    println!("this example shares a memfd between processes: Linux only");
}
