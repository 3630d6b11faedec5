//! The tests of `tests/numa.rs`, which runs them on Linux.
use std::os::unix::process::CommandExt;
use std::process::Command;

use unimem::allocator_api2::vec::Vec as AVec;
use unimem::{
    Block, BlockOptions, Error, Grid, Heap, Model, Node, Pages, Pinning, Placement, Tape,
};

const MIB: usize = 1 << 20;
const REQUIRE: &str = "UNIMEM_REQUIRE_NUMA";
/// Set in the child processes that run under a seccomp filter refusing
/// `mbind` with the errno it names.
const CHILD: &str = "UNIMEM_NUMA_REFUSED";

const MPOL_F_ADDR: libc::c_ulong = 2;

/// The memory policy at `addr`: its mode and the first word of its nodes.
fn policy_at(addr: *const u8) -> (i32, libc::c_ulong) {
    let mut mode: libc::c_int = -1;
    let mut mask = [0 as libc::c_ulong; 16];
    // SAFETY: valid out-pointers, the mask of 1024 bits; the kernel only
    // looks the address up.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode,
            mask.as_mut_ptr(),
            1025 as libc::c_ulong,
            addr,
            MPOL_F_ADDR,
        )
    };
    assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
    (mode, mask[0])
}

/// Bound to node 0 as `placement` says.
fn bound_to_zero(addr: *const u8, placement: Placement) {
    let mode = match placement {
        Placement::Required => libc::MPOL_BIND,
        _ => libc::MPOL_PREFERRED,
    };
    assert_eq!(policy_at(addr), (mode, 1), "the policy at {addr:p}");
}

fn node0() -> BlockOptions<'static> {
    BlockOptions::new()
        .pinning(Pinning::BestEffort)
        .quiet(true)
        .node(Some(Node::new(0)))
        .placement(Placement::Required)
}

/// Opens `bytes` with `options`, skipping the test (failing it where
/// `UNIMEM_REQUIRE_NUMA` is set) where the system refuses memory policies.
fn open(bytes: usize, options: &BlockOptions<'_>) -> Block {
    match options.open(bytes) {
        Err(error @ Error::Placement { .. }) => crate::harness::component::<Block, _>(
            REQUIRE,
            "this system refuses memory policies (mbind)",
            Err(error),
        ),
        other => other.unwrap(),
    }
}

/// Every committed page of `block` in memory, and on node 0.
fn all_on_node0(block: &Block) {
    assert_eq!(
        block.nodes().unwrap(),
        [(Node::new(0), block.committed())],
        "where the pages of {block:?} are"
    );
}

pub fn node_zero_holds_every_page() {
    use Placement::{BestEffort, Required};
    for (what, options, placement) in [
        ("private", node0(), Required),
        ("private, base pages", node0().pages(Pages::Base), Required),
        ("shared", node0().shared(true), Required),
        ("best effort", node0(), BestEffort),
        ("shared, best effort", node0().shared(true), BestEffort),
    ] {
        // A lazy Block: the reservation is bound before any commit.
        let options = options.placement(placement).capacity(64 * MIB);
        let block = open(0, &options);
        assert_eq!(block.node(), Some(Node::new(0)), "{what}");
        bound_to_zero(block.as_ptr(), placement);
        assert_eq!(block.nodes().unwrap(), [], "{what}: nothing committed");
        // Every commit is bound, including the ranges a shared Block maps
        // afresh; one large enough populates from the node's threads.
        for end in [8 * MIB, 10 * MIB, 64 * MIB] {
            block.commit(end).unwrap();
            all_on_node0(&block);
            bound_to_zero(block.as_ptr().wrapping_add(end - 4096), placement);
        }
    }
}

pub fn every_node_with_memory_holds_the_blocks_placed_on_it() {
    // One node on most machines (CI's); on a machine of two or more, the
    // pages really land on the node asked for, not where this thread runs.
    for node in Node::with_memory().unwrap() {
        for shared in [false, true] {
            let block = open(16 * MIB, &node0().node(Some(node)).shared(shared));
            assert_eq!(block.node(), Some(node));
            assert_eq!(
                block.nodes().unwrap(),
                [(node, 16 * MIB)],
                "{node}, shared: {shared}"
            );
        }
        // A large open populates from the node's CPUs.
        let block = open(128 * MIB, &node0().node(Some(node)));
        assert_eq!(block.nodes().unwrap(), [(node, 128 * MIB)], "{node}");
        println!("{node}: a Block's pages are all there");
    }
}

pub fn huge_pages_are_bound_too() {
    let free: usize =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
    if free < 4 {
        crate::harness::component::<(), _>(
            "UNIMEM_REQUIRE_HUGE_PAGES",
            "needs 4 free 2 MiB huge pages",
            Err(format!("{free} free")),
        );
    }
    for shared in [false, true] {
        let options = node0()
            .pages(Pages::Huge2M)
            .shared(shared)
            .capacity(8 * MIB);
        let block = open(2 * MIB, &options);
        all_on_node0(&block);
        // Huge pages are mapped afresh at each commit: bound again.
        bound_to_zero(block.as_ptr(), Placement::Required);
        block.commit(4 * MIB).unwrap();
        all_on_node0(&block);
        bound_to_zero(block.as_ptr().wrapping_add(3 * MIB), Placement::Required);
    }
}

pub fn only_pages_in_memory_are_reported() {
    let page = unimem::page_size();
    let mut block = open(
        MIB,
        &node0()
            .pages(Pages::Base)
            .prefault(false)
            .pinning(Pinning::Off),
    );
    assert_eq!(block.nodes().unwrap(), []);
    for at in [0, 10 * page, MIB - page] {
        block.as_bytes_mut()[at] = 1;
    }
    assert_eq!(block.nodes().unwrap(), [(Node::new(0), 3 * page)]);
    // A Block on no node in particular reports its pages all the same.
    let plain = BlockOptions::new().quiet(true).open(MIB).unwrap();
    assert_eq!(plain.node(), None);
    assert_eq!(plain.nodes().unwrap(), [(Node::new(0), MIB)]);
}

pub fn a_node_that_does_not_exist_is_a_typed_error() {
    let with_memory = Node::with_memory().unwrap();
    assert!(with_memory.contains(&Node::new(0)), "{with_memory:?}");
    // The first node without memory: node 1 on a machine of one node.
    let missing = (0..)
        .map(Node::new)
        .find(|node| !with_memory.contains(node))
        .unwrap();
    for node in [
        missing,
        Node::new(1023),
        Node::new(1024),
        Node::new(u32::MAX),
    ] {
        for placement in [Placement::Required, Placement::BestEffort] {
            let options = node0().node(Some(node)).placement(placement);
            let is_node_error = |result: Result<(), Error>| matches!(result, Err(Error::Node { node: n, .. }) if n == node.index());
            assert!(is_node_error(options.open(MIB).map(drop)), "{node}");
            assert!(is_node_error(Tape::open_with(MIB, &options).map(drop)));
            assert!(is_node_error(Heap::open_with(8 * MIB, &options).map(drop)));
            assert!(is_node_error(Grid::<64, 64>::open_with(&options).map(drop)));
            assert!(is_node_error(
                Model::open_with(MIB, MIB, MIB, &options).map(drop)
            ));
        }
    }
    let error = node0().node(Some(missing)).open(MIB).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("NUMA node {}", missing.index())),
        "{error}"
    );
    // A lazy allocator on it never opens: its allocations fail.
    let tape = Tape::lazy_with(MIB, node0().node(Some(missing)));
    assert!(tape.take(64, 8).is_none());
}

pub fn allocators_pass_the_node_on() {
    open(4096, &node0()); // skips where memory policies are refused
    let options = node0();

    let tape = Tape::open_with(4 * MIB, &options.capacity(64 * MIB)).unwrap();
    assert_eq!(tape.block().node(), Some(Node::new(0)));
    let mut v = AVec::new_in(&tape);
    v.resize(3 * MIB, 1u8);
    v.resize(16 * MIB, 2u8); // grows the Tape's Block
    bound_to_zero(v.as_ptr().wrapping_add(16 * MIB - 1), Placement::Required);
    assert_eq!(tape.block().nodes().unwrap()[0].0, Node::new(0));

    let lazy = Tape::lazy_with(8 * MIB, node0());
    let p = lazy.take(MIB, 64).unwrap();
    bound_to_zero(p, Placement::Required);

    let heap = Heap::open_with(16 * MIB, &options).unwrap();
    let mut map = hashbrown::HashMap::new_in(&heap);
    for i in 0..10_000u64 {
        map.insert(i, [i; 8]);
    }
    bound_to_zero(
        map.get(&9_999).unwrap().as_ptr().cast(),
        Placement::Required,
    );
    let large: AVec<u8, _> = AVec::with_capacity_in(4 * MIB, &heap);
    bound_to_zero(large.as_ptr(), Placement::Required);

    let grid = Grid::<4096, 64>::open_with(&options).unwrap();
    let cell = grid.take().unwrap();
    bound_to_zero(cell.address().cast_const(), Placement::Required);
    assert_eq!(grid.block().node(), Some(Node::new(0)));

    let model = Model::open_with(MIB, MIB, MIB, &options).unwrap();
    bound_to_zero(model.weights().take(64, 64).unwrap(), Placement::Required);
}

pub fn a_required_node_bounds_what_a_commit_may_fault_in() {
    open(4096, &node0());
    let meminfo = std::fs::read_to_string("/sys/devices/system/node/node0/meminfo").unwrap();
    let kib: usize = meminfo
        .split("MemTotal:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    let node_memory = kib * 1024;
    let too_much = node_memory + 64 * MIB;
    let options = node0().pinning(Pinning::Off).capacity(too_much);
    let block = open(0, &options);
    match block.commit(too_much) {
        Err(Error::OutOfMemory {
            requested,
            available,
        }) => {
            // SAFETY: sysconf has no preconditions.
            let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) } as usize;
            let physical = pages * unimem::page_size();
            assert_eq!(requested, too_much.next_multiple_of(unimem::page_size()));
            assert_eq!(available, node_memory.min(physical), "the node's memory");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert_eq!(block.committed(), 0, "nothing was touched");
}

pub fn attach_takes_no_node() {
    let owner = BlockOptions::new()
        .quiet(true)
        .shared(true)
        .open(MIB)
        .unwrap();
    let export = owner.share().unwrap();
    // SAFETY: the attached Block is dropped unused (and is refused anyway).
    let attached = unsafe { Block::attach_with(export, &node0()) };
    assert!(matches!(attached, Err(Error::InvalidArgument { .. })));
}

pub fn pci_devices_report_their_node() {
    let entries = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|dir| dir.filter_map(Result::ok).collect::<Vec<_>>())
        .unwrap_or_default();
    for entry in entries.iter().take(8) {
        let name = entry.file_name().into_string().unwrap();
        let said: i64 = std::fs::read_to_string(entry.path().join("numa_node"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let expected = u32::try_from(said).ok().map(Node::new);
        assert_eq!(Node::near_pci(&name).unwrap(), expected, "{name}");
        // As the CUDA driver and nvidia-smi write it.
        let (domain, rest) = name.split_once(':').unwrap();
        let driver_style = format!("0000{domain}:{}", rest.to_uppercase());
        assert_eq!(
            Node::near_pci(&driver_style).unwrap(),
            expected,
            "{driver_style}"
        );
        if let Some(node) = expected {
            // What sysfs calls the device's node opens a Block.
            assert_eq!(open(MIB, &node0().node(Some(node))).node(), Some(node));
        }
    }
    match Node::near_pci("ffff:ff:1f.7") {
        Err(Error::Os { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(source.to_string().contains("ffff:ff:1f.7"), "{source}");
        }
        other => panic!("expected a missing device, got {other:?}"),
    }
    assert!(matches!(
        Node::near_pci("../../../etc/passwd"),
        Err(Error::InvalidArgument { .. })
    ));
}

/// A BPF program that makes the system calls `calls` fail with `errno`
/// and allows every other call.
fn refuse(calls: &[libc::c_long], errno: u32) -> Vec<libc::sock_filter> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let allow = statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    let deny = statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno);
    let n = calls.len() as u8;
    // seccomp_data.arch (another ABI goes through untouched), then
    // seccomp_data.nr against each call: a match jumps to `deny`.
    let mut program = vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(ARCH, 0, n + 1),
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    for (i, &call) in calls.iter().enumerate() {
        program.push(jump(call as u32, n - i as u8, 0));
    }
    program.extend([allow, deny]);
    program
}

/// What the filter of a child refuses.
#[derive(Clone, Copy)]
struct Refused {
    errno: i32,
    /// `move_pages` too (as Docker's default profile does), not only `mbind`.
    move_pages: bool,
}

/// Runs the test `name` of this binary in a child under a seccomp filter
/// that refuses what `refused` says, and returns its output.
fn run_refused(name: &str, refused: Refused) -> String {
    let mut calls = vec![libc::SYS_mbind];
    if refused.move_pages {
        calls.push(libc::SYS_move_pages);
    }
    let filter = refuse(&calls, refused.errno as u32);
    // An address, which the closure may carry (a pointer is not Send).
    let (filter_at, len) = (filter.as_ptr().expose_provenance(), filter.len() as u16);
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([name, "--exact"])
        .env(
            CHILD,
            format!("{},{}", refused.errno, u8::from(refused.move_pages)),
        )
        .env_remove(REQUIRE);
    // SAFETY: between fork and exec the closure makes two system calls and
    // touches nothing but the filter, which the child's copy of memory
    // holds (`filter` lives until the child has run).
    unsafe {
        child.pre_exec(move || {
            let program = libc::sock_fprog {
                len,
                filter: std::ptr::with_exposed_provenance_mut(filter_at),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let output = match child.output() {
        Ok(output) => output,
        Err(error) => crate::harness::component::<std::process::Output, _>(
            REQUIRE,
            "a seccomp filter could not be installed to refuse mbind",
            Err(error),
        ),
    };
    drop(filter);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("test result: ok. 1 passed"),
        "child {name} did not run:\n{text}"
    );
    text
}

/// What the filter of this child refuses; skips the test outside such a
/// child.
fn refused() -> Refused {
    let Ok(text) = std::env::var(CHILD) else {
        crate::harness::skip("runs in a child of a_refused_mbind_is_handled_as_placement_says")
    };
    let (errno, move_pages) = text.split_once(',').unwrap();
    Refused {
        errno: errno.parse().unwrap(),
        move_pages: move_pages == "1",
    }
}

/// Whether the system call `call` fails with `errno` here (called with
/// arguments that would otherwise succeed, or fail differently).
fn call_refused(call: libc::c_long, errno: i32) -> bool {
    let page = BlockOptions::new()
        .pinning(Pinning::Off)
        .open(4096)
        .unwrap();
    let mask: libc::c_ulong = 1;
    let mut status: libc::c_int = 0;
    let address = page.as_ptr().cast::<libc::c_void>();
    // SAFETY: our own page; a policy call or a query changes no byte.
    let rc = unsafe {
        if call == libc::SYS_mbind {
            libc::syscall(call, address, 4096, libc::MPOL_BIND, &mask, 65, 0)
        } else {
            libc::syscall(
                call,
                0,
                1,
                &address,
                std::ptr::null::<libc::c_int>(),
                &mut status,
                0,
            )
        }
    };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(errno)
}

pub fn a_refused_mbind_is_handled_as_placement_says() {
    if std::env::var_os(CHILD).is_some() {
        crate::harness::skip("the parent test");
    }
    let lines = |text: &str, what: &str| text.lines().filter(|l| l.contains(what)).count();
    for refused in [
        // Docker's default profile: both refused, EPERM.
        Refused {
            errno: libc::EPERM,
            move_pages: true,
        },
        // A kernel without memory policies.
        Refused {
            errno: libc::ENOSYS,
            move_pages: false,
        },
    ] {
        let text = run_refused("child_best_effort_goes_on", refused);
        assert_eq!(
            lines(
                &text,
                "unimem: mbind refused to bind a Block to NUMA node 0"
            ),
            1,
            "told once:\n{text}"
        );
        assert_eq!(
            lines(&text, "Going on with the kernel's default placement"),
            1
        );
    }
    let text = run_refused(
        "child_required_fails",
        Refused {
            errno: libc::EPERM,
            move_pages: false,
        },
    );
    assert_eq!(
        lines(
            &text,
            "unimem: mbind refused to bind a Block to NUMA node 0 (EPERM)"
        ),
        1,
        "told once, by the allocator:\n{text}"
    );
    assert_eq!(
        lines(&text, "fails or spills (Placement::Required)"),
        1,
        "{text}"
    );
}

pub fn child_best_effort_goes_on() {
    let refused = refused();
    // The refusal is real: the calls fail in this process.
    assert!(call_refused(libc::SYS_mbind, refused.errno));
    assert_eq!(
        call_refused(libc::SYS_move_pages, refused.errno),
        refused.move_pages
    );
    let options = BlockOptions::new()
        .pinning(Pinning::Off)
        .node(Some(Node::new(0)));
    // Several Blocks, shared and private, and allocators: the refusal is
    // told once, and each goes on unbound, with the default policy. Each
    // has a label of its own, so that no two private ones merge into one
    // mapping (numa_maps, which answers for a refused move_pages, counts
    // by mapping).
    for (label, shared) in [("numa-a", false), ("numa-b", true), ("numa-c", false)] {
        let block = options.shared(shared).label(label).open(8 * MIB).unwrap();
        assert_eq!(block.node(), None);
        assert_eq!(policy_at(block.as_ptr()), (libc::MPOL_DEFAULT, 0));
        assert_eq!(block.nodes().unwrap(), [(Node::new(0), 8 * MIB)], "{label}");
    }
    // A large open populates from the node's CPUs, placed or not.
    let big = options.label("numa-big").open(128 * MIB).unwrap();
    all_on_node0(&big);
    let tape = Tape::lazy_with(8 * MIB, options);
    assert!(tape.take(MIB, 64).is_some());
    let heap = Heap::open_with(8 * MIB, &options).unwrap();
    let v: AVec<u8, _> = AVec::with_capacity_in(MIB, &heap);
    assert_eq!(policy_at(v.as_ptr()), (libc::MPOL_DEFAULT, 0));
}

pub fn child_required_fails() {
    let errno = refused().errno;
    let options = BlockOptions::new()
        .pinning(Pinning::Off)
        .node(Some(Node::new(0)))
        .placement(Placement::Required);
    // Opened by the program: the error says it all, nothing is told.
    for shared in [false, true] {
        match options.shared(shared).open(MIB) {
            Err(Error::Placement { node: 0, source }) => {
                assert_eq!(source.raw_os_error(), Some(errno));
            }
            other => panic!("expected a refused placement, got {other:?}"),
        }
    }
    let error = Tape::open_with(MIB, &options).unwrap_err();
    assert!(matches!(error, Error::Placement { node: 0, .. }));
    assert!(error.to_string().contains("SYS_NICE"), "{error}");
    assert_eq!(error.raw_os_error(), Some(errno));
    // An allocator's Block, opened where no error reaches anyone: the
    // allocation fails, and standard error is told (once).
    let tape = Tape::lazy_with(MIB, options);
    assert!(tape.take(64, 8).is_none());
    assert!(tape.take(64, 8).is_none());
    let grid = Grid::<64, 64>::lazy_with(options);
    assert!(grid.take().is_none());
}
