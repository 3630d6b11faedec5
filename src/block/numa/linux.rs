//! NUMA on Linux: sysfs for what the nodes are, `mbind` to bind a range,
//! `sched_setaffinity` to run on a node's CPUs, `move_pages` to ask where
//! pages are. Raw system calls through `libc`; [`check`] and [`bind`] read
//! into stack buffers and allocate nothing (a global allocator reaches
//! them).

use core::ffi::CStr;
use core::fmt::Write;
use std::io;

use super::{Node, PciAddress, Placement};
use crate::Error;
use crate::stderr::Line;

/// Nodes the masks below can name: the kernel's own limit
/// (`CONFIG_NODES_SHIFT` is at most 10).
const MAX_NODES: usize = 1024;

/// Bits in one word of a node mask.
const WORD: usize = libc::c_ulong::BITS as usize;

/// A node mask as `mbind` takes it.
type Mask = [libc::c_ulong; MAX_NODES / WORD];

/// Reads the file at `path` (NUL-terminated) into `buf`: the bytes read
/// (at most `buf.len()`; sysfs files here are far shorter).
fn read_into(path: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    debug_assert_eq!(path.last(), Some(&0));
    // SAFETY: `path` is NUL-terminated; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: `buf[len..]` is writable for its length; `fd` is ours.
        let got = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        match usize::try_from(got) {
            Ok(0) => break,
            Ok(got) => len += got,
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // SAFETY: ours, closed once.
                unsafe { libc::close(fd) };
                return Err(error);
            }
        }
    }
    // SAFETY: ours, closed once.
    unsafe { libc::close(fd) };
    Ok(len)
}

/// `/sys/devices/system/node/node<N>/<leaf>`, NUL-terminated, on the stack.
fn node_path(node: Node, leaf: &str) -> Line<96> {
    let mut path = Line::new();
    let _ = write!(
        path,
        "/sys/devices/system/node/node{}/{leaf}\0",
        node.index()
    );
    path
}

/// Calls `each` with every number of a kernel list (`0-3,8,10-11`);
/// stops at the first malformed part.
fn each_in_list(text: &[u8], mut each: impl FnMut(usize)) {
    let text = text.trim_ascii();
    if text.is_empty() {
        return;
    }
    for part in text.split(|&b| b == b',') {
        let number = |digits: &[u8]| -> Option<usize> {
            if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(
                digits
                    .iter()
                    .fold(0, |n, &d| n * 10 + usize::from(d - b'0')),
            )
        };
        let (first, last) = match part.iter().position(|&b| b == b'-') {
            Some(dash) => (number(&part[..dash]), number(&part[dash + 1..])),
            None => (number(part), number(part)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        // Kernel lists are short; a range past any machine's size is cut.
        for n in first..=last.min(first + (1 << 16)) {
            each(n);
        }
    }
}

/// Whether `n` is in the kernel list at `path`; `None` if the file cannot
/// be read.
fn listed(path: &CStr, n: usize) -> Option<bool> {
    let mut buf = [0u8; 1024];
    let len = read_into(path.to_bytes_with_nul(), &mut buf).ok()?;
    let mut found = false;
    each_in_list(&buf[..len], |m| found |= m == n);
    Some(found)
}

/// Checks that `node` exists and has memory, and returns its memory in bytes
/// (`MemTotal` of its `meminfo`).
///
/// A kernel without NUMA support (no `/sys/devices/system/node`) has node 0
/// only, with all the machine's memory.
pub(crate) fn check(node: Node) -> Result<usize, Error> {
    let index = node.index() as usize;
    if index >= MAX_NODES {
        return Err(Error::Node {
            node: node.index(),
            reason: "beyond the kernel's largest node number (1023)",
        });
    }
    let Some(online) = listed(c"/sys/devices/system/node/online", index) else {
        if index == 0 {
            return Ok(crate::sys::physical_memory());
        }
        return Err(Error::Node {
            node: node.index(),
            reason: "this system shows no NUMA nodes (no /sys/devices/system/node): only node 0",
        });
    };
    if !online {
        return Err(Error::Node {
            node: node.index(),
            reason: "no such node online (see /sys/devices/system/node/online)",
        });
    }
    if listed(c"/sys/devices/system/node/has_memory", index) == Some(false) {
        return Err(Error::Node {
            node: node.index(),
            reason: "the node has no memory, only CPUs (see /sys/devices/system/node/has_memory)",
        });
    }
    let mut buf = [0u8; 2048];
    let len = read_into(node_path(node, "meminfo").as_bytes(), &mut buf).unwrap_or(0);
    let text = &buf[..len];
    let key = b"MemTotal:";
    let kib = text
        .windows(key.len())
        .position(|w| w == key)
        .map_or(0, |at| {
            text[at + key.len()..]
                .iter()
                .skip_while(|b| b.is_ascii_whitespace())
                .take_while(|b| b.is_ascii_digit())
                .fold(0usize, |n, &d| {
                    n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                })
        });
    if kib == 0 {
        // Listed with memory, yet its meminfo does not say how much: take
        // the machine's as the bound.
        return Ok(crate::sys::physical_memory());
    }
    Ok(kib.saturating_mul(1024))
}

/// The nodes with memory.
pub(super) fn with_memory() -> Result<Vec<Node>, Error> {
    const PATH: &CStr = c"/sys/devices/system/node/has_memory";
    let mut buf = [0u8; 1024];
    match read_into(PATH.to_bytes_with_nul(), &mut buf) {
        Ok(len) => {
            let mut nodes = Vec::new();
            each_in_list(&buf[..len], |n| {
                if n < MAX_NODES {
                    nodes.push(Node::new(n as u32));
                }
            });
            Ok(nodes)
        }
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            let online = read_into(
                c"/sys/devices/system/node/online".to_bytes_with_nul(),
                &mut buf,
            );
            match online {
                // No NUMA support at all: one node, 0.
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(vec![Node::new(0)]),
                // Kernels before has_memory existed: every online node.
                Ok(len) => {
                    let mut nodes = Vec::new();
                    each_in_list(&buf[..len], |n| {
                        if n < MAX_NODES {
                            nodes.push(Node::new(n as u32));
                        }
                    });
                    Ok(nodes)
                }
                Err(source) => Err(Error::Os {
                    call: "reading /sys/devices/system/node/online",
                    source,
                }),
            }
        }
        Err(source) => Err(Error::Os {
            call: "reading /sys/devices/system/node/has_memory",
            source,
        }),
    }
}

/// Binds the `len` bytes at `at` to `node`: `MPOL_BIND` for
/// [`Placement::Required`], `MPOL_PREFERRED` for best effort. Pages
/// already there stay where they are; pages populated later follow the
/// policy.
///
/// # Safety
/// `at..at + len` is a page-aligned range of this process's own mappings
/// (the policy changes where pages come from, never a byte).
pub(crate) unsafe fn bind(
    at: *mut u8,
    len: usize,
    node: Node,
    placement: Placement,
) -> io::Result<()> {
    let index = node.index() as usize;
    debug_assert!(index < MAX_NODES, "checked by `check`");
    let mut mask: Mask = [0; MAX_NODES / WORD];
    mask[index / WORD] |= 1 << (index % WORD);
    let mode = match placement {
        Placement::Required => libc::MPOL_BIND,
        Placement::BestEffort => libc::MPOL_PREFERRED,
    };
    // SAFETY: the mask outlives the call and holds MAX_NODES bits (the
    // kernel reads `maxnode - 1` of them); the range is the caller's own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            at,
            len,
            mode as libc::c_ulong,
            mask.as_ptr(),
            (MAX_NODES + 1) as libc::c_ulong,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A node's CPUs that this process may run on.
pub(crate) struct Cpus {
    set: libc::cpu_set_t,
    count: usize,
}

impl Cpus {
    /// How many there are (at least one).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Whether `cpu` is one of them.
    #[cfg(test)]
    pub(crate) fn has(&self, cpu: usize) -> bool {
        // SAFETY: CPU_ISSET checks `cpu` against the set's size itself.
        cpu < 8 * size_of::<libc::cpu_set_t>() && unsafe { libc::CPU_ISSET(cpu, &self.set) }
    }

    /// The CPUs the calling thread may run on now.
    #[cfg(test)]
    pub(crate) fn of_this_thread() -> Cpus {
        // SAFETY: plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: a valid out-pointer of the size given.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0, "sched_getaffinity: {}", io::Error::last_os_error());
        // SAFETY: a valid set.
        let count = unsafe { libc::CPU_COUNT(&set) } as usize;
        Cpus { set, count }
    }

    /// Just `cpu`.
    #[cfg(test)]
    pub(crate) fn just(cpu: usize) -> Cpus {
        // SAFETY: plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `cpu` is below the set's capacity (the caller's).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        Cpus { set, count: 1 }
    }
}

/// The CPUs of `node` (`cpulist` in sysfs) that the calling thread's
/// affinity allows; `None` for a node without any (memory only, or outside
/// this process's cpuset), or where sysfs does not say.
pub(crate) fn cpus(node: Node) -> Option<Cpus> {
    // SAFETY: `cpu_set_t` is plain data; all zeroes is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer of the size given.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) };
    if rc != 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let len = read_into(node_path(node, "cpulist").as_bytes(), &mut buf).ok()?;
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    let mut count = 0;
    let capacity = 8 * size_of::<libc::cpu_set_t>();
    each_in_list(&buf[..len], |cpu| {
        // SAFETY: `cpu` is below the set's capacity in bits.
        if cpu < capacity && unsafe { libc::CPU_ISSET(cpu, &allowed) } {
            // SAFETY: as above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
            count += 1;
        }
    });
    (count > 0).then_some(Cpus { set, count })
}

/// Moves the calling thread onto `cpus` (best effort: a refusal leaves it
/// where it was, which only costs locality).
pub(crate) fn run_on(cpus: &Cpus) {
    // SAFETY: a valid set of the size given, for the calling thread.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &cpus.set) };
}

/// How many bytes of the `len` bytes at `at` (the committed part of a
/// reservation of `capacity` bytes) are in memory on each node: `move_pages`
/// with no target nodes asks where each page is, `step` bytes apart (the
/// page size, or the huge page size for explicit huge pages). Pages not in
/// memory are left out. Where `move_pages` is refused (Docker's default
/// seccomp profile refuses it, whatever the capabilities), the kernel's
/// per-mapping counts in `/proc/self/numa_maps` answer instead, as long as
/// every mapping of the range lies inside the reservation (one merged with
/// a neighbour's would count the neighbour's pages too).
pub(crate) fn residency(
    at: *const u8,
    len: usize,
    capacity: usize,
    step: usize,
) -> Result<Vec<(Node, usize)>, Error> {
    match ask_move_pages(at, len, step) {
        Err(Error::Os { call, source })
            if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
        {
            from_numa_maps(at.addr(), len, capacity).ok_or(Error::Os { call, source })
        }
        other => other,
    }
}

/// [`residency`] by `move_pages`.
fn ask_move_pages(at: *const u8, len: usize, step: usize) -> Result<Vec<(Node, usize)>, Error> {
    const BATCH: usize = 512;
    let mut bytes: Vec<usize> = Vec::new();
    let mut pages = [core::ptr::null::<libc::c_void>(); BATCH];
    let mut status = [0 as libc::c_int; BATCH];
    let mut offset = 0;
    while offset < len {
        let count = (len - offset).div_ceil(step).min(BATCH);
        for (i, page) in pages[..count].iter_mut().enumerate() {
            *page = at.wrapping_add(offset + i * step).cast();
        }
        // SAFETY: `pages` and `status` hold `count` entries each and outlive
        // the call; with null nodes the kernel only reports, moving nothing
        // and reading no byte of the pages.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0 as libc::c_int,
                count as libc::c_ulong,
                pages.as_ptr(),
                core::ptr::null::<libc::c_int>(),
                status.as_mut_ptr(),
                0 as libc::c_int,
            )
        };
        if rc < 0 {
            return Err(Error::last_os("move_pages"));
        }
        for &node in &status[..count] {
            // Negative: not in memory (-ENOENT), or not mapped (-EFAULT).
            if let Ok(node) = usize::try_from(node) {
                if bytes.len() <= node {
                    bytes.resize(node + 1, 0);
                }
                bytes[node] += step;
            }
        }
        offset += count * step;
    }
    Ok(bytes
        .into_iter()
        .enumerate()
        .filter(|&(_, bytes)| bytes > 0)
        .map(|(node, bytes)| (Node::new(node as u32), bytes))
        .collect())
}

/// [`residency`] from `/proc/self/numa_maps`: the per-node page counts of
/// every mapping that holds committed bytes of the reservation at `start`;
/// `None` if a file cannot be read or such a mapping reaches outside the
/// reservation.
fn from_numa_maps(start: usize, committed: usize, capacity: usize) -> Option<Vec<(Node, usize)>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let numa_maps = std::fs::read_to_string("/proc/self/numa_maps").ok()?;
    let hex = |text: &str| usize::from_str_radix(text, 16).ok();
    // The mappings holding committed bytes, by their first byte.
    let mut ours = Vec::new();
    for line in maps.lines() {
        let (range, _) = line.split_once(' ')?;
        let (from, to) = range.split_once('-')?;
        let (from, to) = (hex(from)?, hex(to)?);
        if to <= start || from >= start + committed {
            continue;
        }
        if from < start || to > start + capacity {
            return None;
        }
        ours.push(from);
    }
    let mut bytes: Vec<usize> = Vec::new();
    let mut found = 0;
    for line in numa_maps.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(from) = words.next().and_then(hex) else {
            continue;
        };
        if !ours.contains(&from) {
            continue;
        }
        found += 1;
        let words: Vec<&str> = words.collect();
        let page_kib = words
            .iter()
            .find_map(|w| w.strip_prefix("kernelpagesize_kB="))
            .and_then(|kib| kib.parse::<usize>().ok())?;
        for word in &words {
            let Some((node, pages)) = word.strip_prefix('N').and_then(|w| w.split_once('=')) else {
                continue;
            };
            let (Ok(node), Ok(pages)) = (node.parse::<usize>(), pages.parse::<usize>()) else {
                continue;
            };
            if node >= MAX_NODES {
                return None;
            }
            if bytes.len() <= node {
                bytes.resize(node + 1, 0);
            }
            bytes[node] += pages * page_kib * 1024;
        }
    }
    // Every mapping was found in both files (none came or went between).
    if found != ours.len() {
        return None;
    }
    Some(
        bytes
            .into_iter()
            .enumerate()
            .filter(|&(_, bytes)| bytes > 0)
            .map(|(node, bytes)| (Node::new(node as u32), bytes))
            .collect(),
    )
}

/// The node of the PCI device at `address`, from sysfs.
pub(super) fn near_pci(address: PciAddress) -> Result<Option<Node>, Error> {
    const CALL: &str = "reading /sys/bus/pci/devices/<address>/numa_node";
    let path = format!("/sys/bus/pci/devices/{address}/numa_node");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Os {
                call: CALL,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no PCI device {address} (no {path})"),
                ),
            });
        }
        Err(source) => return Err(Error::Os { call: CALL, source }),
    };
    match text.trim().parse::<i64>() {
        Ok(node) if node < 0 => Ok(None),
        Ok(node) => u32::try_from(node)
            .map(|node| Some(Node::new(node)))
            .map_err(|_| malformed(CALL, &path)),
        Err(_) => Err(malformed(CALL, &path)),
    }
}

fn malformed(call: &'static str, path: &str) -> Error {
    Error::Os {
        call,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} does not hold a node number"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<usize> {
        let mut numbers = Vec::new();
        each_in_list(text.as_bytes(), |n| numbers.push(n));
        numbers
    }

    #[test]
    fn kernel_lists_parse() {
        assert_eq!(list("0\n"), [0]);
        assert_eq!(list("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(list(""), [] as [usize; 0]);
        assert_eq!(list("\n"), [] as [usize; 0]);
        // A malformed part stops the list there.
        assert_eq!(list("1,x,3"), [1]);
        assert_eq!(list("2-"), [] as [usize; 0]);
    }

    #[test]
    fn node_paths_are_terminated() {
        let path = node_path(Node::new(12), "cpulist");
        assert_eq!(
            path.as_bytes(),
            b"/sys/devices/system/node/node12/cpulist\0"
        );
    }
}
