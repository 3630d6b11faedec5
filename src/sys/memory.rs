//! The page size and how much memory the machine has (part of `sys`).

/// The system's page size in bytes.
pub(crate) fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            if page.is_power_of_two() {
                return page;
            }
        }
    }
    // POSIX lets sysconf fail and other platforms have none: the page size
    // of every common target.
    4096
}

/// Bytes of physical memory, or `usize::MAX` if the system does not say.
pub(crate) fn physical_memory() -> usize {
    #[cfg(any(unimem_linux, unimem_apple))]
    {
        // SAFETY: sysconf has no preconditions.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        usize::try_from(pages).map_or(usize::MAX, |pages| pages.saturating_mul(page_size()))
    }
    #[cfg(not(any(unimem_linux, unimem_apple)))]
    usize::MAX
}

/// Bytes the kernel expects it can hand out without swapping (`MemAvailable`
/// in `/proc/meminfo`), read into a stack buffer; free memory if that file
/// cannot be read.
#[cfg(unimem_linux)]
pub(crate) fn available_memory() -> usize {
    const PATH: &[u8] = b"/proc/meminfo\0";
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let len = if fd >= 0 {
        // SAFETY: `buf` is writable for its length; `fd` is ours.
        let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: ours, closed once.
        unsafe { libc::close(fd) };
        usize::try_from(len).unwrap_or(0)
    } else {
        0
    };
    let text = &buf[..len];
    let key = b"MemAvailable:";
    if let Some(at) = text.windows(key.len()).position(|w| w == key) {
        let kib = text[at + key.len()..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .fold(0usize, |n, &d| {
                n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
        return kib.saturating_mul(1024);
    }
    // SAFETY: `sysinfo` is plain data; all zeroes is a valid value, and the
    // call fills it.
    let mut info: libc::sysinfo = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::sysinfo(&mut info) } == 0 {
        return (info.freeram as usize).saturating_mul(info.mem_unit as usize);
    }
    usize::MAX
}

/// Bytes that can be faulted in: the physical memory (Apple), or unknown.
#[cfg(not(unimem_linux))]
pub(crate) fn available_memory() -> usize {
    physical_memory()
}
