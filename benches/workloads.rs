//! Workloads from mimalloc-bench, ported to Rust, run on the unimem `Heap`
//! and on its peers as the process's global allocator: larson, xmalloc-test,
//! cache-scratch, cache-thrash, mstress, glibc-simple, alloc-test, rptest;
//! and three of our own: zeroed-churn (zeroed buffers, mostly untouched,
//! handed between threads), foreign-first (the smallest allocation and free
//! on threads whose first free was of another thread's object) and a
//! many-threads test of what stays resident once 1500 threads have gone.
//! Each port's module says what follows the original and what was scaled.
//!
//! The same code runs on every allocator: a dispatching
//! `#[global_allocator]` forwards to the one named by the environment
//! variable `UNIMEM_WORKLOAD_ALLOCATOR`, read once without allocating. Run
//! without it, the binary is the harness: it starts itself again once per
//! (allocator, workload, thread count), the allocators interleaved, for a
//! number of rounds; keeps each cell's best throughput and its largest peak
//! resident set (the child's `ru_maxrss`, from `wait4`); and prints one
//! markdown table.
//!
//! ```text
//! cargo bench -p unimem-benches --bench workloads                  # 3 rounds, threads 1 2 4 8 16
//! cargo bench -p unimem-benches --bench workloads -- --quick       # 1 round, about a quarter of the work
//! cargo bench -p unimem-benches --bench workloads -- --only larson,rptest --threads 1,4 --rounds 5
//! cargo bench -p unimem-benches --bench workloads -- --allocators unimem,unimem-prefault,mimalloc
//! cargo bench -p unimem-benches --bench workloads -- --build before=/tmp/workloads-before --only mstress
//! ```
//!
//! `--build LABEL=PATH` adds a column `unimem@LABEL`: the Heap of another
//! build of this bench (a copy of its binary, say from the commit before a
//! change), run interleaved with this one's, so that a change is measured
//! side by side in one run (any allocator can be named that way in
//! `--allocators`, `mimalloc@LABEL`).
//!
//! The `unimem` column is the README's global Heap line exactly,
//! `Heap::lazy(256 MiB)`: Blocks reserved, committed
//! as used without prefaulting or transparent huge pages, pinned where
//! `mlock` allows. `unimem-prefault` (not run by default) opens its Blocks
//! with `BlockOptions::lazy()` instead: each 2 MiB commit step is faulted in
//! at once, with transparent huge pages.

#[path = "workloads/mod.rs"]
mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;
use unimem::{BlockOptions, Heap};

use workloads::common::{Outcome, proc_status_kib};

// ---------------------------------------------------------------------------
// The global allocator, chosen per process.

/// The variable naming the allocator of a child process.
const ENV: &CStr = c"UNIMEM_WORKLOAD_ALLOCATOR";

/// The README's global Heap, exactly.
static HEAP: Heap = Heap::lazy(256 << 20);

/// The same, with each commit step faulted in and transparent huge pages.
static HEAP_PREFAULT: Heap = Heap::lazy_with(256 << 20, BlockOptions::lazy());

/// The allocators, in the order of the table's columns.
const ALLOCATORS: [&str; 5] = [
    "unimem",
    "unimem-prefault",
    "mimalloc",
    "jemalloc",
    "system",
];
const DEFAULT_ALLOCATORS: [&str; 4] = ["unimem", "mimalloc", "jemalloc", "system"];
const UNIMEM: u8 = 0;
const UNIMEM_PREFAULT: u8 = 1;
const MIMALLOC: u8 = 2;
const JEMALLOC: u8 = 3;
const SYSTEM: u8 = 4;
const UNCHOSEN: u8 = u8::MAX;

static CHOSEN: AtomicU8 = AtomicU8::new(UNCHOSEN);

/// The allocator of this process: the environment variable's on first use,
/// the system allocator without it.
#[inline(always)]
fn chosen() -> u8 {
    let c = CHOSEN.load(Ordering::Relaxed);
    if c != UNCHOSEN {
        return c;
    }
    choose()
}

#[cold]
#[inline(never)]
fn choose() -> u8 {
    // SAFETY: `getenv` with a NUL-terminated name; nothing in this program
    // sets the environment, so the string it returns stays valid while read.
    let value = unsafe { libc::getenv(ENV.as_ptr()) };
    let c = if value.is_null() {
        SYSTEM
    } else {
        // SAFETY: a non-null `getenv` result is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(value) }.to_bytes();
        ALLOCATORS
            .iter()
            .position(|a| a.as_bytes() == name)
            .map_or(SYSTEM, |i| i as u8)
    };
    // Every thread that races here reads the same variable and stores the
    // same value.
    CHOSEN.store(c, Ordering::Relaxed);
    c
}

/// Forwards to the chosen allocator. The choice is made before the first
/// allocation returns and never changes, so every free reaches the
/// allocator that made the block.
struct Dispatch;

macro_rules! forward {
    ($method:ident($($arg:expr),*)) => {
        match chosen() {
            UNIMEM => HEAP.$method($($arg),*),
            UNIMEM_PREFAULT => HEAP_PREFAULT.$method($($arg),*),
            MIMALLOC => MiMalloc.$method($($arg),*),
            JEMALLOC => Jemalloc.$method($($arg),*),
            _ => System.$method($($arg),*),
        }
    };
}

// SAFETY: each call goes to one allocator, the same for the whole process,
// with the caller's arguments unchanged; each of them implements GlobalAlloc.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { forward!(alloc(layout)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { forward!(alloc_zeroed(layout)) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on: `ptr` came from the same
        // allocator, the only one this process uses.
        unsafe { forward!(dealloc(ptr, layout)) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        unsafe { forward!(realloc(ptr, layout, new_size)) }
    }
}

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

// ---------------------------------------------------------------------------
// The workloads.

struct Workload {
    name: &'static str,
    unit: &'static str,
    /// Runs it at a thread count with a work scale (1 normally).
    run: fn(usize, f64) -> Outcome,
    /// The thread counts it runs at, out of those asked for (`None`: all).
    only_threads: Option<&'static [usize]>,
    /// The threads it really starts at a thread count (for the
    /// oversubscription mark).
    real_threads: fn(usize) -> usize,
    /// Whether the table shows its resident set after the run as well.
    rss_after: bool,
}

fn same(t: usize) -> usize {
    t
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "larson",
        unit: "allocs/s",
        run: workloads::larson::run,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "xmalloc-test",
        unit: "frees/s",
        run: workloads::xmalloc::run,
        only_threads: None,
        real_threads: |t| 2 * t,
        rss_after: false,
    },
    Workload {
        name: "cache-scratch",
        unit: "writes/s",
        run: workloads::cache::scratch,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "cache-thrash",
        unit: "writes/s",
        run: workloads::cache::thrash,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "mstress",
        unit: "allocs/s",
        run: workloads::mstress::run,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "glibc-simple",
        unit: "allocs/s",
        run: workloads::glibc_simple::run,
        only_threads: Some(&[1]),
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "alloc-test",
        unit: "ops/s",
        run: workloads::alloc_test::run,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "rptest",
        unit: "ops/thread-s",
        run: workloads::rptest::run,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "zeroed-churn",
        unit: "buffers/s",
        run: workloads::zeroed_churn::run,
        only_threads: None,
        real_threads: same,
        rss_after: true,
    },
    Workload {
        name: "foreign-first",
        unit: "loops/s",
        run: workloads::foreign_first::run,
        only_threads: None,
        real_threads: same,
        rss_after: false,
    },
    Workload {
        name: "many-threads",
        unit: "threads/s",
        run: workloads::many_threads::run,
        only_threads: Some(&[workloads::many_threads::THREADS]),
        real_threads: same,
        rss_after: true,
    },
];

fn workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

// ---------------------------------------------------------------------------
// The child: one workload at one thread count, on the chosen allocator.

fn child(args: &[String]) {
    let [name, threads, scale] = args else {
        panic!("--child NAME THREADS SCALE");
    };
    let w = workload(name).unwrap_or_else(|| panic!("no workload {name}"));
    let threads: usize = threads.parse().expect("a thread count");
    let scale: f64 = scale.parse().expect("a scale");
    let outcome = (w.run)(threads, scale);
    let rss_after = outcome
        .rss_after_kib
        .unwrap_or_else(|| proc_status_kib("VmRSS"));
    let (heap_high_water, heap_spilled) = match chosen() {
        UNIMEM => {
            let s = HEAP.stats();
            (s.high_water, s.spilled)
        }
        UNIMEM_PREFAULT => {
            let s = HEAP_PREFAULT.stats();
            (s.high_water, s.spilled)
        }
        _ => (0, 0),
    };
    println!(
        "RESULT {} {} {} {} {} {}",
        outcome.ops,
        outcome.secs,
        rss_after,
        proc_status_kib("VmHWM"),
        heap_high_water,
        heap_spilled
    );
}

// ---------------------------------------------------------------------------
// The harness.

/// One child's measurements.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Operations per second (the workload's unit).
    throughput: f64,
    /// Wall-clock seconds of the whole child.
    wall: f64,
    /// The child's peak resident set, KiB (`ru_maxrss`).
    peak_kib: u64,
    /// Its resident set at the end, KiB.
    after_kib: u64,
    /// For the Heap: its committed high water and spilled bytes.
    heap_high_water: usize,
    heap_spilled: usize,
}

/// A cell's result over the rounds.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    best: Option<Sample>,
    peak_kib: u64,
    after_kib: u64,
    failures: usize,
}

impl Cell {
    fn add(&mut self, sample: Option<Sample>) {
        let Some(s) = sample else {
            self.failures += 1;
            return;
        };
        self.peak_kib = self.peak_kib.max(s.peak_kib);
        self.after_kib = self.after_kib.max(s.after_kib);
        if self.best.is_none_or(|b| s.throughput > b.throughput) {
            self.best = Some(s);
        }
    }
}

const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs one child of `exe` on `allocator`; `None` if it failed or timed out.
fn run_child(
    exe: &Path,
    allocator: &str,
    w: &Workload,
    threads: usize,
    scale: f64,
) -> Option<Sample> {
    let start = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also gives its rusage"
    )]
    let mut child = Command::new(exe)
        .args(["--child", w.name, &threads.to_string(), &scale.to_string()])
        .env(ENV.to_str().unwrap(), allocator)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting a child");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: `pid` is our child, not yet reaped; the pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if !killed && start.elapsed() > CHILD_TIMEOUT {
            eprintln!(
                "  {} on {allocator} at {threads} threads: timed out",
                w.name
            );
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = start.elapsed().as_secs_f64();
    let mut out = String::new();
    use std::io::Read as _;
    child.stdout.take().unwrap().read_to_string(&mut out).ok()?;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        eprintln!(
            "  {} on {allocator} at {threads} threads failed (status {status:#x})",
            w.name
        );
        return None;
    }
    let line = out.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let [ops, secs, after, _hwm, high_water, spilled] = f[..] else {
        return None;
    };
    Some(Sample {
        throughput: ops / secs,
        wall,
        peak_kib: usage.ru_maxrss as u64,
        after_kib: after as u64,
        heap_high_water: high_water as usize,
        heap_spilled: spilled as usize,
    })
}

struct Options {
    quick: bool,
    rounds: usize,
    threads: Vec<usize>,
    only: Option<Vec<String>>,
    allocators: Vec<String>,
    /// Other builds of this bench, by label (`--build`).
    builds: Vec<(String, PathBuf)>,
}

impl Options {
    /// The binary and the allocator a column names: `A` is allocator `A` of
    /// this binary, `A@LABEL` allocator `A` of the build labelled `LABEL`.
    fn resolve<'a>(&'a self, column: &'a str, this: &'a Path) -> (&'a Path, &'a str) {
        match column.split_once('@') {
            Some((allocator, label)) => {
                let (_, path) = self
                    .builds
                    .iter()
                    .find(|(l, _)| l == label)
                    .expect("checked by parse_options");
                (path, allocator)
            }
            None => (this, column),
        }
    }
}

fn parse_options(args: &[String]) -> Options {
    let mut o = Options {
        quick: false,
        rounds: 3,
        threads: vec![1, 2, 4, 8, 16],
        only: None,
        allocators: DEFAULT_ALLOCATORS.iter().map(|s| s.to_string()).collect(),
        builds: Vec::new(),
    };
    let mut rounds = None;
    let mut allocators_given = false;
    let mut it = args.iter();
    let list = |v: Option<&String>, flag: &str| -> Vec<String> {
        v.unwrap_or_else(|| panic!("{flag} needs a value"))
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => rounds = Some(list(it.next(), a)[0].parse().expect("--rounds N")),
            "--threads" => {
                o.threads = list(it.next(), a)
                    .iter()
                    .map(|t| t.parse().expect("--threads 1,2,4"))
                    .collect()
            }
            "--only" => {
                let names = list(it.next(), a);
                for n in &names {
                    assert!(
                        workload(n).is_some(),
                        "no workload {n}; there are: {}",
                        WORKLOADS
                            .iter()
                            .map(|w| w.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                o.only = Some(names);
            }
            "--allocators" => {
                o.allocators = list(it.next(), a);
                allocators_given = true;
            }
            "--build" => {
                let value = it.next().expect("--build LABEL=PATH");
                let (label, path) = value.split_once('=').expect("--build LABEL=PATH");
                assert!(
                    std::fs::metadata(path).is_ok_and(|m| m.is_file()),
                    "--build {label}: no file {path}"
                );
                o.builds.push((label.to_string(), PathBuf::from(path)));
            }
            // What cargo passes to a bench binary.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}; flags: --quick, --only W[,W], --threads N[,N], --rounds N, --allocators A[,A], --build LABEL=PATH"
            ),
        }
    }
    if !allocators_given {
        // Each other build's Heap, next to this one's.
        let at = o
            .allocators
            .iter()
            .position(|a| a == "unimem")
            .map_or(0, |i| i + 1);
        for (k, (label, _)) in o.builds.iter().enumerate() {
            o.allocators.insert(at + k, format!("unimem@{label}"));
        }
    }
    for n in &o.allocators {
        let (allocator, label) = n
            .split_once('@')
            .map_or((n.as_str(), None), |(a, l)| (a, Some(l)));
        assert!(
            ALLOCATORS.contains(&allocator),
            "no allocator {allocator}; there are: {}",
            ALLOCATORS.join(", ")
        );
        if let Some(label) = label {
            assert!(
                o.builds.iter().any(|(l, _)| l == label),
                "{n}: no --build {label}=PATH"
            );
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick { 1 } else { 3 });
    o
}

fn si(x: f64) -> String {
    let (v, suffix) = if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, " ")
    };
    if v >= 100.0 {
        format!("{v:.0}{suffix}")
    } else if v >= 10.0 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.2}{suffix}")
    }
    .trim_end()
    .to_string()
}

fn mib(kib: u64) -> String {
    let m = kib as f64 / 1024.0;
    if m >= 100.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let o = parse_options(&args);
    let scale = if o.quick { 0.25 } else { 1.0 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The rows: each workload at each of its thread counts.
    let mut rows: Vec<(&Workload, usize)> = Vec::new();
    for w in WORKLOADS {
        if o.only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|n| n == w.name))
        {
            continue;
        }
        match w.only_threads {
            Some(counts) => rows.extend(counts.iter().map(|&t| (w, t))),
            None => rows.extend(o.threads.iter().map(|&t| (w, t))),
        }
    }
    let allocators = &o.allocators;
    let this = std::env::current_exe().expect("the running binary");
    eprintln!(
        "{} rows × {} allocators × {} rounds; {cores} cores",
        rows.len(),
        allocators.len(),
        o.rounds
    );

    let mut cells: HashMap<(&str, usize, &str), Cell> = HashMap::new();
    for round in 0..o.rounds {
        for (i, &(w, threads)) in rows.iter().enumerate() {
            // Interleaved: every allocator once per row, starting one further
            // along each round.
            for k in 0..allocators.len() {
                let a = &allocators[(k + round + i) % allocators.len()];
                let (exe, allocator) = o.resolve(a, &this);
                let sample = run_child(exe, allocator, w, threads, scale);
                if let Some(s) = sample {
                    eprintln!(
                        "round {} {:>13} {:>5} {:>15}: {:>9} {} peak {} ({:.2} s)",
                        round + 1,
                        w.name,
                        threads,
                        a,
                        si(s.throughput),
                        w.unit,
                        mib(s.peak_kib),
                        s.wall
                    );
                }
                cells
                    .entry((w.name, threads, a.as_str()))
                    .or_default()
                    .add(sample);
            }
        }
    }

    print!("{}", table(&rows, allocators, &cells, cores, &o, scale));
}

fn table(
    rows: &[(&Workload, usize)],
    allocators: &[String],
    cells: &HashMap<(&str, usize, &str), Cell>,
    cores: usize,
    o: &Options,
    scale: f64,
) -> String {
    let is_heap = |a: &str| a.starts_with("unimem");
    let heaps: Vec<&String> = allocators.iter().filter(|a| is_heap(a)).collect();
    let mimalloc = allocators.iter().any(|a| a == "mimalloc");
    let jemalloc = allocators.iter().any(|a| a == "jemalloc");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{cores} cores; best of {} round{} per cell{}; peak RSS is the child's ru_maxrss (largest over the rounds). \
         unimem/best: the Heap's throughput over the best peer's (above 1: the Heap is faster; \
         the peers are the columns that are not a Heap); \
         RSS unimem/mimalloc, RSS unimem/jemalloc: the Heap's peak RSS over mimalloc's and over jemalloc's.\n",
        o.rounds,
        if o.rounds == 1 { "" } else { "s" },
        if scale < 1.0 {
            ", --quick (a quarter of the work)"
        } else {
            ""
        },
    );
    let mut header = String::from("| workload | threads | unit |");
    let mut rule = String::from("|---|---|---|");
    for a in allocators {
        let _ = write!(header, " {a} |");
        rule.push_str("---|");
    }
    for a in &heaps {
        let _ = write!(header, " {a}/best |");
        rule.push_str("---|");
    }
    for a in allocators {
        let _ = write!(header, " RSS {a} |");
        rule.push_str("---|");
    }
    for (present, peer) in [(mimalloc, "mimalloc"), (jemalloc, "jemalloc")] {
        if present {
            for a in &heaps {
                let _ = write!(header, " RSS {a}/{peer} |");
                rule.push_str("---|");
            }
        }
    }
    if let Some(a) = heaps.first() {
        let _ = write!(header, " {a} committed peak |");
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");

    let mut spilled_rows = Vec::new();
    for &(w, threads) in rows {
        let cell = |a: &str| {
            cells
                .get(&(w.name, threads, a))
                .copied()
                .unwrap_or_default()
        };
        let real = (w.real_threads)(threads);
        let label = if real > cores {
            format!("{threads} (oversubscribed)")
        } else {
            threads.to_string()
        };
        let _ = write!(out, "| {} | {label} | {} |", w.name, w.unit);
        for a in allocators {
            let c = cell(a);
            match c.best {
                Some(s) => {
                    let _ = write!(out, " {} |", si(s.throughput));
                }
                None => out.push_str(" failed |"),
            }
        }
        let best_peer = allocators
            .iter()
            .filter(|a| !is_heap(a))
            .filter_map(|a| cell(a).best.map(|s| (s.throughput, a)))
            .max_by(|x, y| x.0.total_cmp(&y.0));
        for a in &heaps {
            match (cell(a).best, best_peer) {
                (Some(h), Some((p, name))) => {
                    let _ = write!(out, " {:.2} ({name}) |", h.throughput / p);
                }
                _ => out.push_str(" - |"),
            }
        }
        for a in allocators {
            let c = cell(a);
            if c.best.is_some() {
                let _ = write!(out, " {} |", mib(c.peak_kib));
            } else {
                out.push_str(" - |");
            }
        }
        for (present, peer) in [(mimalloc, "mimalloc"), (jemalloc, "jemalloc")] {
            if !present {
                continue;
            }
            let m = cell(peer);
            for a in &heaps {
                let h = cell(a);
                if h.best.is_some() && m.best.is_some() && m.peak_kib > 0 {
                    let _ = write!(out, " {:.2} |", h.peak_kib as f64 / m.peak_kib as f64);
                } else {
                    out.push_str(" - |");
                }
            }
        }
        if let Some(a) = heaps.first() {
            match cell(a).best {
                Some(s) => {
                    let _ = write!(out, " {} |", mib((s.heap_high_water >> 10) as u64));
                    if s.heap_spilled > 0 {
                        spilled_rows.push(format!("{} at {threads}", w.name));
                    }
                }
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    if !spilled_rows.is_empty() {
        let _ = writeln!(
            out,
            "\nThe Heap spilled to the system allocator in: {}.",
            spilled_rows.join(", ")
        );
    }
    let failures: usize = cells.values().map(|c| c.failures).sum();
    if failures > 0 {
        let _ = writeln!(out, "\n{failures} child run(s) failed (see above).");
    }

    out.push_str(&scaling(rows, allocators, cells, cores));

    // The resident set after the run, where the workload measures it
    // (once every thread has exited), one table per workload.
    let mut names: Vec<&str> = rows
        .iter()
        .filter(|(w, _)| w.rss_after)
        .map(|(w, _)| w.name)
        .collect();
    names.dedup();
    for name in names {
        let _ = writeln!(
            out,
            "\n{name}: VmRSS at the end of the run, once every worker has exited (largest over the rounds)\n"
        );
        let mut header = String::from("| threads |");
        let mut rule = String::from("|---|");
        for a in allocators {
            let _ = write!(header, " {a} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for &(_, threads) in rows.iter().filter(|(w, _)| w.name == name) {
            let _ = write!(out, "| {threads} |");
            for a in allocators {
                let c = cells
                    .get(&(name, threads, a.as_str()))
                    .copied()
                    .unwrap_or_default();
                if c.best.is_some() {
                    let _ = write!(out, " {} |", mib(c.after_kib));
                } else {
                    out.push_str(" - |");
                }
            }
            out.push('\n');
        }
    }
    out
}

/// The scaling table: for each workload run at more than one thread count,
/// each allocator's throughput at every count over its own at the smallest.
/// Counts with more threads than cores are marked.
fn scaling(
    rows: &[(&Workload, usize)],
    allocators: &[String],
    cells: &HashMap<(&str, usize, &str), Cell>,
    cores: usize,
) -> String {
    let mut out = String::new();
    let mut names: Vec<&str> = rows.iter().map(|(w, _)| w.name).collect();
    names.dedup();
    for name in names {
        let counts: Vec<(&Workload, usize)> = rows
            .iter()
            .filter(|(w, _)| w.name == name)
            .copied()
            .collect();
        let Some(&(w, base)) = counts.first() else {
            continue;
        };
        if counts.len() < 2 {
            continue;
        }
        if out.is_empty() {
            let _ = writeln!(
                out,
                "\nScaling: each allocator's throughput over its own at the fewest threads \
                 (rptest's unit is per thread, so flat is ideal there; * more threads than cores: oversubscribed)\n"
            );
        }
        let mut header = String::from("| workload | allocator |");
        let mut rule = String::from("|---|---|");
        for &(w, t) in &counts {
            let mark = if (w.real_threads)(t) > cores { "*" } else { "" };
            let _ = write!(header, " {t}{mark} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for a in allocators {
            let at = |t: usize| {
                cells
                    .get(&(w.name, t, a.as_str()))
                    .and_then(|c| c.best)
                    .map(|s| s.throughput)
            };
            let _ = write!(out, "| {name} | {a} |");
            for &(_, t) in &counts {
                match (at(t), at(base)) {
                    (Some(x), Some(b)) if b > 0.0 => {
                        let _ = write!(out, " {:.2} |", x / b);
                    }
                    _ => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
