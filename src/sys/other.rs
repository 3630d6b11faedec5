//! Process services where there is no Unix (part of `sys`).

/// No thread-exit hook here.
pub(crate) fn on_thread_exit(_value: usize, _hook: fn(usize)) -> bool {
    false
}

/// Writes `bytes` to standard error.
pub(crate) fn write_stderr(bytes: &[u8]) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(bytes);
}

/// Nothing is locked here.
pub(crate) fn memlock_limit() -> Option<u64> {
    None
}
