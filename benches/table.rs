//! Prints the benchmark table: every row of the seed's table and the fast
//! paths, each subject measured in this one run, with unimem's ratio to the
//! best peer. Run with `cargo bench -p unimem-benches --bench table` (`-- --quick` for a
//! shorter, noisier run).

mod support;

use std::time::Duration;

use support::Unit;

/// Columns, in order.
const COLUMNS: [&str; 10] = [
    "unimem",
    "system",
    "mimalloc",
    "bumpalo",
    "Vec",
    "Box",
    "mmap",
    "mmap+mlock",
    "CAS loop",
    "ArrayQueue",
];

/// Iterations of `subject` that take about `target` of wall-clock time
/// (set-up included, so that subjects whose untimed set-up dwarfs the timed
/// part stay bounded).
fn calibrate(subject: &support::Subject, target: Duration) -> u64 {
    // Warm up first: a lazy allocator opens its Block on the first call,
    // which must not count as the speed of one operation.
    subject(1);
    let mut iters = 1u64;
    loop {
        let start = std::time::Instant::now();
        subject(iters);
        let wall = start.elapsed();
        if wall >= target / 4 || iters >= 1 << 30 {
            let scale = (target.as_secs_f64() / wall.as_secs_f64().max(1e-9)).clamp(1.0, 1e6);
            return ((iters as f64 * scale) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Nanoseconds per operation of each subject of a row: the subjects run in
/// turn, `rounds` times over, and each keeps its fastest run. Interleaving
/// spreads the machine's slow spells over every subject, and the minimum
/// drops the runs that other work on the machine slowed down.
fn measure_row(row: &support::Row, target: Duration, rounds: usize) -> Vec<(&'static str, f64)> {
    let iters: Vec<u64> = row
        .subjects
        .iter()
        .map(|(_, s)| calibrate(s, target))
        .collect();
    let mut best = vec![f64::MAX; row.subjects.len()];
    for _ in 0..rounds {
        for (i, (_, subject)) in row.subjects.iter().enumerate() {
            let ns = subject(iters[i]).as_nanos() as f64 / iters[i] as f64;
            best[i] = best[i].min(ns);
        }
    }
    row.subjects
        .iter()
        .map(|(name, _)| *name)
        .zip(best)
        .collect()
}

/// Why a peer's figure in a row is not like for like, if it is not: it is
/// then marked `†`, left out of the best peer, and the reason printed under
/// the table.
fn unlike(row: &str, subject: &str) -> Option<&'static str> {
    match subject {
        "mimalloc" if row.starts_with("init") && row.contains("warm") => Some(
            "mimalloc keeps the memory a run freed mapped and hands it to the next run:              after the first run it faults nothing in, where every other column does",
        ),
        _ => None,
    }
}

fn show(unit: Unit, ns: f64) -> String {
    match unit {
        Unit::Bandwidth(bytes) => format!("{:.1} GB/s", bytes as f64 / ns),
        Unit::Time if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Unit::Time if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        Unit::Time => format!("{ns:.1} ns"),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only TEXT` keeps the rows whose name contains TEXT.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (target, rounds) = if quick {
        (Duration::from_millis(20), 3)
    } else {
        (Duration::from_millis(50), 15)
    };
    println!("machine: {}", machine());
    println!(
        "each figure: the fastest of {rounds} interleaved runs of about {target:?}; ratio = unimem time ÷ best peer time (below 1: unimem is faster)\n"
    );
    print!("| operation |");
    for column in COLUMNS {
        print!(" {column} |");
    }
    println!(" best peer | ratio |");
    println!("|---|{}---|---|", "---|".repeat(COLUMNS.len()));
    let mut notes = Vec::new();
    for row in support::rows() {
        if only.as_deref().is_some_and(|only| !row.name.contains(only)) {
            continue;
        }
        let figures = measure_row(&row, target, rounds);
        print!("| {} |", row.name);
        for column in COLUMNS {
            match figures.iter().find(|(name, _)| *name == column) {
                Some(&(_, ns)) => {
                    let mark = match unlike(row.name, column) {
                        Some(why) => {
                            notes.push(format!("† {}, {column}: {why}", row.name));
                            " †"
                        }
                        None => "",
                    };
                    print!(" {}{mark} |", show(row.unit, ns));
                }
                None => print!(" - |"),
            }
        }
        let unimem = figures
            .iter()
            .find(|(name, _)| *name == "unimem")
            .map(|f| f.1);
        let best = figures
            .iter()
            .filter(|(name, _)| *name != "unimem" && unlike(row.name, name).is_none())
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match (unimem, best) {
            (Some(u), Some(&(peer, ns))) => println!(" {peer} | {:.2} |", u / ns),
            _ => println!(" - | - |"),
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("{note}");
        }
    }
}
