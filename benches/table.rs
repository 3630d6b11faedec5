//! Prints the benchmark table: every row of the seed's table and the fast
//! paths, each subject measured in this one run, with unimem's ratio to the
//! best peer. Run with `cargo bench --bench table` (`-- --quick` for a
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

/// Nanoseconds per operation: the median of `rounds` measurements, each
/// sized to take about `target`.
fn measure(subject: &support::Subject, target: Duration, rounds: usize) -> f64 {
    // Warm up first: a lazy allocator opens its Block on the first call,
    // which must not count as the speed of one operation.
    subject(1);
    let mut iters = 1u64;
    loop {
        let took = subject(iters);
        if took >= target / 4 || iters >= 1 << 30 {
            let scale = (target.as_secs_f64() / took.as_secs_f64().max(1e-9)).clamp(1.0, 1e6);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| subject(iters).as_nanos() as f64 / iters as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
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
        (Duration::from_millis(100), 9)
    };
    println!("machine: {}", machine());
    println!(
        "each figure: median of {rounds} runs of about {target:?}; ratio = unimem time ÷ best peer time (below 1: unimem is faster)\n"
    );
    print!("| operation |");
    for column in COLUMNS {
        print!(" {column} |");
    }
    println!(" best peer | ratio |");
    println!("|---|{}---|---|", "---|".repeat(COLUMNS.len()));
    for row in support::rows() {
        if only.as_deref().is_some_and(|only| !row.name.contains(only)) {
            continue;
        }
        let figures: Vec<(&str, f64)> = row
            .subjects
            .iter()
            .map(|(name, subject)| (*name, measure(subject, target, rounds)))
            .collect();
        print!("| {} |", row.name);
        for column in COLUMNS {
            match figures.iter().find(|(name, _)| *name == column) {
                Some(&(_, ns)) => print!(" {} |", show(row.unit, ns)),
                None => print!(" - |"),
            }
        }
        let unimem = figures
            .iter()
            .find(|(name, _)| *name == "unimem")
            .map(|f| f.1);
        let best = figures
            .iter()
            .filter(|(name, _)| *name != "unimem")
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match (unimem, best) {
            (Some(u), Some(&(peer, ns))) => println!(" {peer} | {:.2} |", u / ns),
            _ => println!(" - | - |"),
        }
    }
}
