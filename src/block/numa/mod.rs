//! NUMA placement: which memory node a Block's pages come from, and where
//! they are.
//!
//! On a machine of several NUMA nodes (sockets, or chiplets of one), memory
//! is nearer some CPUs and some PCI devices than others, and a GPU copying
//! from pinned memory on the far node gets a fraction of the bandwidth it
//! gets from the near one. [`BlockOptions::node`](super::BlockOptions::node)
//! asks for a node: the Block's reservation is bound to it (`mbind`) before
//! any page is populated, and again wherever a commit maps pages afresh
//! (shared memfd and explicit huge-page Blocks), so every page comes from
//! that node; the threads that populate a large commit run on the node's
//! CPUs. [`Region::nodes`](super::Region::nodes) says where the pages are.
//! [`Node::near_pci`] (and, with their features, `Node::near_cuda` and
//! `Node::near_vulkan`) find the node nearest a device.
//!
//! Only the Linux backend places pages: elsewhere (macOS, the portable
//! backend, Miri) a node is [`Error::Unsupported`].
//!
//! Every call is a raw system call through `libc` (`mbind`, `move_pages`,
//! `sched_setaffinity`) and sysfs (`/sys/devices/system/node`,
//! `/sys/bus/pci/devices`); what a global allocator reaches (checking a node,
//! binding) reads into stack buffers and allocates nothing.

use core::fmt;

use crate::Error;

#[cfg(unimem_linux)]
#[path = "linux.rs"]
mod imp;

#[cfg(unimem_linux)]
pub(crate) use imp::{Cpus, bind, check, cpus, residency, run_on};

/// A NUMA node: a group of CPUs and the memory nearest them, numbered as
/// the kernel numbers them (`/sys/devices/system/node/node<N>`).
///
/// Any number makes a `Node`; whether the node exists and has memory is
/// checked when a Block is opened on it ([`Error::Node`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node(u32);

impl Node {
    /// The node the kernel numbers `index`.
    pub const fn new(index: u32) -> Node {
        Node(index)
    }

    /// The kernel's number for the node.
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The nodes that have memory, in order (`/sys/devices/system/node/has_memory`):
    /// one on most machines, two or more on multi-socket servers.
    ///
    /// Errors: not Linux ([`Error::Unsupported`]); sysfs unreadable
    /// ([`Error::Os`]). A kernel without NUMA support (no
    /// `/sys/devices/system/node`) has one node, 0.
    pub fn with_memory() -> Result<Vec<Node>, Error> {
        #[cfg(unimem_linux)]
        {
            imp::with_memory()
        }
        #[cfg(not(unimem_linux))]
        {
            Err(unsupported())
        }
    }

    /// The node nearest the PCI device at `address`, as the kernel says
    /// (`/sys/bus/pci/devices/<address>/numa_node`); `None` where it names
    /// none (`-1`: a machine of one node, or firmware that does not say).
    ///
    /// `address` is `domain:bus:device.function` in hexadecimal, as `lspci
    /// -D`, `nvidia-smi` and the CUDA driver write it (`0000:3b:00.0`,
    /// `00000000:3B:00.0`), or `bus:device.function` for domain 0.
    ///
    /// Errors: a malformed address ([`Error::InvalidArgument`]); no such
    /// device, or sysfs unreadable ([`Error::Os`], naming the file); not
    /// Linux ([`Error::Unsupported`]).
    ///
    /// ```no_run
    /// use unimem::{BlockOptions, Node, Tape};
    ///
    /// let near = Node::near_pci("0000:3b:00.0")?;
    /// let tape = Tape::open_with(64 << 20, &BlockOptions::new().node(near))?;
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn near_pci(address: &str) -> Result<Option<Node>, Error> {
        let address = PciAddress::parse(address)?;
        #[cfg(unimem_linux)]
        {
            imp::near_pci(address)
        }
        #[cfg(not(unimem_linux))]
        {
            let _ = address;
            Err(unsupported())
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// How strictly a Block keeps to its NUMA node
/// ([`BlockOptions::node`](super::BlockOptions::node)), in the spirit of
/// [`Pinning`](super::Pinning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// Every page comes from the node (`MPOL_BIND`). Where the system
    /// refuses memory policies (`mbind` is `EPERM` or `ENOSYS`: some
    /// containers' seccomp profiles; Docker's default allows it only with
    /// `CAP_SYS_NICE`), opening fails with [`Error::Placement`], and an
    /// allocator's growth fails (told once on standard error). When the
    /// node runs out of memory, the kernel does not take pages elsewhere:
    /// a commit larger than the node's memory is [`Error::OutOfMemory`],
    /// and past what is free the kernel reclaims, swaps or OOM-kills as for
    /// any memory of the process.
    Required,
    /// Pages come from the node while it has free memory, else from the
    /// others (`MPOL_PREFERRED`). Where the system refuses memory policies,
    /// the Block goes on with the kernel's default placement (the node of
    /// the CPU that first touches a page; a large commit is still populated
    /// from the node's CPUs), [`Region::node`](super::Region::node) is
    /// `None`, and the first refusal in the process is told once on
    /// standard error. The default.
    #[default]
    BestEffort,
}

/// What a refused `mbind` means.
#[cfg_attr(
    not(all(target_os = "linux", not(miri))),
    expect(dead_code, reason = "only Linux binds pages, so only it is refused")
)]
pub(crate) enum Refusal {
    /// The system forbids memory policies (`EPERM`, `ENOSYS`).
    Forbidden,
    /// The node is outside those this process may use (`EINVAL` for a node
    /// `check` found online with memory: the cpuset).
    NotAllowed,
    /// Anything else.
    Other,
}

/// Classifies the error `mbind` returned.
pub(crate) fn refusal(error: &std::io::Error) -> Refusal {
    #[cfg(unimem_linux)]
    match error.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS) => return Refusal::Forbidden,
        Some(libc::EINVAL) => return Refusal::NotAllowed,
        _ => {}
    }
    let _ = error;
    Refusal::Other
}

/// A PCI address, checked: `domain:bus:device.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PciAddress {
    pub(crate) domain: u32,
    pub(crate) bus: u8,
    pub(crate) device: u8,
    pub(crate) function: u8,
}

impl PciAddress {
    /// Parses `[domain:]bus:device.function` (hexadecimal, either case, a
    /// trailing NUL or whitespace ignored).
    pub(crate) fn parse(text: &str) -> Result<PciAddress, Error> {
        const MALFORMED: Error = Error::InvalidArgument {
            reason: "a PCI address is domain:bus:device.function in hexadecimal, \
                     as in 0000:3b:00.0",
        };
        let text = text.trim_end_matches(['\0', ' ', '\n']);
        let (head, function) = text.rsplit_once('.').ok_or(MALFORMED)?;
        let mut parts = head.rsplitn(3, ':');
        let device = parts.next().ok_or(MALFORMED)?;
        let bus = parts.next().ok_or(MALFORMED)?;
        let domain = parts.next().unwrap_or("0");
        let hex = |part: &str, digits: usize, max: u32| {
            if part.is_empty()
                || part.len() > digits
                || !part.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(MALFORMED);
            }
            match u32::from_str_radix(part, 16) {
                Ok(value) if value <= max => Ok(value),
                _ => Err(MALFORMED),
            }
        };
        Ok(PciAddress {
            domain: hex(domain, 8, u32::MAX)?,
            bus: hex(bus, 2, 0xff)? as u8,
            device: hex(device, 2, 0x1f)? as u8,
            function: hex(function, 1, 7)? as u8,
        })
    }
}

/// As sysfs names the device: `0000:3b:00.0`.
impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// The error for a node where nodes are not supported.
#[cfg(not(unimem_linux))]
pub(crate) fn unsupported() -> Error {
    Error::Unsupported {
        what: "placing memory on a NUMA node (Linux only)",
    }
}

/// The checks of a node before a Block is opened on it: elsewhere than
/// Linux, none passes.
#[cfg(not(unimem_linux))]
pub(crate) fn check(_node: Node) -> Result<usize, Error> {
    Err(unsupported())
}

/// Never called elsewhere than Linux: `check` refuses every node first.
///
/// # Safety
/// None needed; `unsafe` to match the Linux one.
#[cfg(not(unimem_linux))]
pub(crate) unsafe fn bind(
    _at: *mut u8,
    _len: usize,
    _node: Node,
    _placement: Placement,
) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Where the pages are: elsewhere than Linux, nobody says.
#[cfg(not(unimem_linux))]
pub(crate) fn residency(
    _at: *const u8,
    _len: usize,
    _capacity: usize,
    _step: usize,
) -> Result<Vec<(Node, usize)>, Error> {
    Err(Error::Unsupported {
        what: "reporting the NUMA nodes of a Block's pages (Linux only)",
    })
}

/// A node's CPUs, for the populate threads; none elsewhere than Linux.
#[cfg(not(unimem_linux))]
pub(crate) enum Cpus {}

#[cfg(not(unimem_linux))]
impl Cpus {
    pub(crate) fn count(&self) -> usize {
        match *self {}
    }
}

#[cfg(not(unimem_linux))]
pub(crate) fn cpus(_node: Node) -> Option<Cpus> {
    None
}

#[cfg(not(unimem_linux))]
pub(crate) fn run_on(cpus: &Cpus) {
    match *cpus {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_parse_as_drivers_write_them() {
        let canonical = |text: &str| PciAddress::parse(text).map(|a| a.to_string());
        assert_eq!(canonical("0000:3b:00.0").unwrap(), "0000:3b:00.0");
        assert_eq!(canonical("00000000:3B:00.0").unwrap(), "0000:3b:00.0");
        assert_eq!(canonical("3b:1f.7").unwrap(), "0000:3b:1f.7");
        assert_eq!(canonical("10000:e1:00.1\0\0").unwrap(), "10000:e1:00.1");
        assert_eq!(canonical("0000:3b:00.0\n").unwrap(), "0000:3b:00.0");
        for bad in [
            "",
            "3b",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "0000:13b:00.0",
            "000000000:3b:00.0",
            "0000:3b:00.0/../..",
            "../../0:00.0",
            "0000:3b:+0.0",
            "x:0000:3b:00.0",
        ] {
            assert!(
                matches!(canonical(bad), Err(Error::InvalidArgument { .. })),
                "{bad:?} was accepted"
            );
        }
    }
}
