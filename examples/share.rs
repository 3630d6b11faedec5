//! Two processes, one set of pinned pages: the parent fills a tensor in a
//! Block, a child process attaches the Block's memfd and reduces the tensor
//! in place, and the parent reads the answer. No bytes are copied.
//!
//! Run with `cargo run --example share`.

#[cfg(all(target_os = "linux", not(miri)))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::process::Command;
    use std::time::Instant;

    use unimem::{Block, BlockOptions, Error, Pinning};

    const FLOATS: usize = 1 << 22; // 16 MiB of f32

    if let Some(fd) = std::env::args().nth(1) {
        // Child: map the parent's pages and sum the tensor where it lies.
        // SAFETY: the parent inherited this descriptor to us and owns no other
        // copy of this number in our process.
        let fd = unsafe { OwnedFd::from_raw_fd(fd.parse()?) };
        // SAFETY: the parent waits for us to exit before touching the pages.
        let mut block =
            unsafe { Block::attach_with(fd, &BlockOptions::new().pinning(Pinning::BestEffort)) }?;
        let floats = block.as_f32_mut();
        let sum: f64 = floats[1..=FLOATS].iter().map(|&x| f64::from(x)).sum();
        floats[0] = sum as f32;
        return Ok(());
    }

    let started = Instant::now();
    let mut block = match Block::open((FLOATS + 1) * 4) {
        Ok(block) => block,
        Err(error @ Error::Pin { .. }) => {
            eprintln!("pinning refused ({error}); going on unpinned");
            BlockOptions::new()
                .pinning(Pinning::BestEffort)
                .open((FLOATS + 1) * 4)?
        }
        Err(error) => return Err(error.into()),
    };
    println!(
        "opened a {} MiB block in {:?} (pinned: {})",
        block.size() >> 20,
        started.elapsed(),
        block.is_pinned()
    );
    for (i, x) in block.as_f32_mut()[1..=FLOATS].iter_mut().enumerate() {
        *x = (i % 8) as f32;
    }

    // The shared fd is close-on-exec; clear that so the child inherits it.
    let fd = block.share()?;
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg(fd.as_raw_fd().to_string())
        .status()?;
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

#[cfg(not(all(target_os = "linux", not(miri))))]
fn main() {
    println!("this example shares a memfd between processes: Linux only");
}
