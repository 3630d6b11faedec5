//! Forking test processes: a child that runs a closure and leaves with its
//! answer as the exit code, and a parent that waits for it with a deadline.
//!
//! The child of a multi-threaded test binary has one thread, and the locks
//! other threads held (std's output locks among them) stay held there: the
//! closure must not print, panic or touch std's synchronization. It returns
//! the exit code, and the child leaves with `_exit`, running no destructors.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Forks; the child runs `child` and exits with what it returns (0 means
/// success). Returns the child's pid.
pub fn fork(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child only runs `child`, which
    // the caller keeps to what is safe after fork, and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = child();
        // SAFETY: leaves the child at once, running no atexit handlers or
        // destructors of the parent's state.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signalled(i32),
    /// Still running at the deadline (then killed), with where its thread
    /// was (gdb's backtrace, where gdb is installed).
    Hung(String),
}

/// Waits for `pid` up to `deadline`; kills it if it is still running.
pub fn wait(pid: libc::pid_t, deadline: Duration) -> Ended {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if rc == pid {
            return if libc::WIFEXITED(status) {
                Ended::Exited(libc::WEXITSTATUS(status))
            } else {
                Ended::Signalled(libc::WTERMSIG(status))
            };
        }
        if start.elapsed() > deadline {
            let stack = std::process::Command::new("gdb")
                .args([
                    "-p",
                    &pid.to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_else(|error| format!("no backtrace: {error}"));
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Ended::Hung(stack);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
