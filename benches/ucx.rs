//! Put bandwidth over UCX from a registered Block into a registered Block
//! of another process, side by side with `ucx_perftest -t ucp_put_bw` run
//! in the same bench on the same machine, over tcp (loopback) and over
//! shared memory (`posix,sysv,cma`), printed as a table with the ratios.
//!
//! Run with `cargo bench -p unimem-benches --features ucx --bench ucx` (`-- --quick` for a
//! quarter of the iterations). Each unimem row: the bench spawns itself as
//! the owner, which shares a 64 MiB `Vec<u8>` in a registered Tape and
//! progresses its worker; this side puts from a `Vec<u8>` in a registered
//! Tape of its own (`Batch::put_from`, up to `WINDOW` = 32 puts in flight,
//! as `ucx_perftest`'s put bandwidth test keeps), all to offset 0 as
//! `ucx_perftest` does, `-w` warm-up puts first, then `-n` puts and one
//! flush timed. Each `ucx_perftest` row: a server `ucx_perftest -p PORT`
//! and a client `ucx_perftest 127.0.0.1 -p PORT -t ucp_put_bw -s S -n N
//! -w W -f`, with the same `UCX_TLS`; its "overall" bandwidth. Both in MiB/s
//! (`ucx_perftest`'s "MB/s" are 2^20 bytes). Without `ucx_perftest`
//! (Debian: ucx-utils) its column says so.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use allocator_api2::vec::Vec;
use unimem::ucx::{Context, Descriptor, ErrorMode, Link, Peers, Registered};
use unimem::{BlockOptions, Error, Pinning, Tape};

/// Message sizes, iterations and warm-up iterations.
const SIZES: [(usize, usize, usize); 5] = [
    (4 << 10, 20_000, 1000),
    (64 << 10, 4096, 100),
    (1 << 20, 256, 10),
    (16 << 20, 16, 2),
    (64 << 20, 8, 2),
];

/// The transports: a name for the table and `UCX_TLS`.
const TRANSPORTS: [(&str, &str); 2] = [("tcp", "tcp"), ("shm", "posix,sysv,cma")];

const WAIT: Duration = Duration::from_secs(120);

/// The owner child's environment variable: the port to connect to.
const OWNER_PORT: &str = "UNIMEM_UCX_BENCH_OWNER_PORT";

fn options() -> BlockOptions<'static> {
    BlockOptions::new().pinning(Pinning::BestEffort).quiet(true)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(port) = std::env::var(OWNER_PORT) {
        owner(port.parse()?)?;
        return Ok(());
    }
    let quick = std::env::args().any(|arg| arg == "--quick");
    let mut rows = std::vec::Vec::new();
    for (name, tls) in TRANSPORTS {
        let ours = match unimem(tls, quick) {
            Ok(rates) => rates.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error.to_string()); SIZES.len()],
        };
        for ((size, iters, warmup), ours) in SIZES.into_iter().zip(ours) {
            let (iters, warmup) = scaled(iters, warmup, quick);
            let theirs = perftest(tls, size, iters, warmup);
            rows.push((name, size, iters, ours, theirs));
        }
    }
    println!();
    println!(
        "| transport | message | puts | unimem put (MiB/s) | ucx_perftest ucp_put_bw (MiB/s) | unimem / perftest |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, size, iters, ours, theirs) in rows {
        let ratio = match (&ours, &theirs) {
            (Ok(a), Ok(b)) if *b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let show = |rate: &Result<f64, String>| match rate {
            Ok(rate) => format!("{rate:.1}"),
            Err(why) => why.clone(),
        };
        println!(
            "| {name} | {} | {iters} | {} | {} | {ratio} |",
            size_name(size),
            show(&ours),
            show(&theirs)
        );
    }
    Ok(())
}

fn scaled(iters: usize, warmup: usize, quick: bool) -> (usize, usize) {
    if quick {
        ((iters / 4).max(4), (warmup / 4).max(1))
    } else {
        (iters, warmup)
    }
}

fn size_name(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// unimem's put bandwidth over `tls` for each of `SIZES`, in MiB/s.
fn unimem(tls: &str, quick: bool) -> Result<std::vec::Vec<f64>, Error> {
    let context = Context::with_settings(Peers::Trusted, &[("TLS", tls), ("NET_DEVICES", "lo")])?;
    let worker = context.worker()?;
    let largest = SIZES.iter().map(|s| s.0).max().unwrap();
    let local = Registered::new(&context, Tape::open_with(largest + (1 << 20), &options())?)?;
    let mut source: Vec<u8, _> = Vec::with_capacity_in(largest, &*local);
    source.extend((0..largest).map(|i| i as u8));

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Os {
        call: "bind",
        source,
    })?;
    let port = listener.local_addr().unwrap().port();
    let owner = Killed(
        Command::new(std::env::current_exe().unwrap())
            .env(OWNER_PORT, port.to_string())
            .env("UCX_TLS", tls)
            .env("UCX_NET_DEVICES", "lo")
            .env("UCX_LOG_FILE", "stderr")
            .spawn()
            .map_err(|source| Error::Os {
                call: "spawn",
                source,
            })?,
    );
    let mut link = Link::accept(&listener, WAIT)?;
    // UCX 1.13's shared-memory transports cannot detect a failed peer.
    let endpoint = match tls {
        "tcp" => worker.connect(&mut link, WAIT)?,
        _ => worker.connect_with(&mut link, WAIT, ErrorMode::None)?,
    };
    endpoint.set_timeout(WAIT);
    let descriptor = Descriptor::from_bytes(&link.recv(WAIT)?)?;
    let grant = link.verify(&descriptor, WAIT)?;
    let remote = endpoint.remote(&grant)?;

    let mut rates = std::vec::Vec::new();
    for (size, iters, warmup) in SIZES {
        let (iters, warmup) = scaled(iters, warmup, quick);
        let piece = &source[..size];
        let puts = |n: usize| -> Result<(), Error> {
            remote.batch(|batch| {
                for _ in 0..n {
                    batch.put_from(0, piece, &local)?;
                }
                Ok(())
            })?;
            endpoint.flush()
        };
        puts(warmup)?;
        let start = Instant::now();
        puts(iters)?;
        let took = start.elapsed().as_secs_f64();
        rates.push((size * iters) as f64 / took / (1u64 << 20) as f64);
        eprintln!(
            "unimem {tls} {}: {:.1} MiB/s",
            size_name(size),
            rates.last().unwrap()
        );
    }
    // Flushed: dropping them lets the owner know (before "done") that
    // nothing here uses its Vec any more.
    drop(remote);
    drop(grant);
    link.send(b"done")?;
    drop(endpoint);
    owner.wait();
    Ok(rates)
}

/// The owner: shares a 64 MiB `Vec<u8>` in a registered Tape and serves
/// until told it is done.
fn owner(port: u16) -> Result<(), Error> {
    let context = Context::new(Peers::Trusted)?;
    let worker = context.worker()?;
    let largest = SIZES.iter().map(|s| s.0).max().unwrap();
    let tape = Registered::new(&context, Tape::open_with(largest + (1 << 20), &options())?)?;
    let mut target: Vec<u8, _> = Vec::with_capacity_in(largest, &*tape);
    target.resize(largest, 0);
    let mut link = Link::connect(("127.0.0.1", port), WAIT)?;
    link.send_address(&worker)?;
    link.send(&tape.descriptor_of(&target)?.to_bytes())?;
    link.recv_serving(&worker, Duration::from_secs(1800))?;
    Ok(())
}

/// A child process, killed if it is still running when dropped.
struct Killed(Child);

impl Killed {
    fn wait(mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ucx_perftest -t ucp_put_bw`'s overall bandwidth, in MiB/s.
fn perftest(tls: &str, size: usize, iters: usize, warmup: usize) -> Result<f64, String> {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.local_addr().unwrap().port().to_string()
    };
    let command = |args: &[&str]| {
        let mut command = Command::new("ucx_perftest");
        command
            .args(args)
            .env("UCX_TLS", tls)
            .env("UCX_NET_DEVICES", "lo")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let server = match command(&["-p", &port]).spawn() {
        Ok(server) => Killed(server),
        Err(_) => return Err("no ucx_perftest (ucx-utils)".to_owned()),
    };
    let (size, iters, warmup) = (size.to_string(), iters.to_string(), warmup.to_string());
    let args = [
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ucp_put_bw",
        "-s",
        &size,
        "-n",
        &iters,
        "-w",
        &warmup,
        "-f",
    ];
    // The server may not listen yet: a few tries.
    let mut output = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let mut client = Killed(command(&args).spawn().map_err(|e| e.to_string())?);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = client.0.try_wait().map_err(|e| e.to_string())? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        let _ = client.0.stdout.take().unwrap().read_to_string(&mut out);
        match status {
            Some(status) if status.success() => {
                output = Some(out);
                break;
            }
            Some(_) => continue,
            None => return Err("ucx_perftest timed out".to_owned()),
        }
    }
    drop(server);
    let output = output.ok_or("ucx_perftest failed")?;
    // The result line: iterations, three latencies, two bandwidths, two
    // message rates; the overall bandwidth is the sixth number.
    let line = output
        .lines()
        .rev()
        .find(|line| !line.trim_start().starts_with(['+', '|']) && !line.trim().is_empty())
        .ok_or("no result from ucx_perftest")?;
    let rate = line
        .split_whitespace()
        .nth(5)
        .and_then(|field| field.parse::<f64>().ok())
        .ok_or_else(|| format!("unreadable ucx_perftest line: {line}"))?;
    eprintln!(
        "ucx_perftest {tls} {}: {rate:.1} MiB/s",
        size_name(size.parse().unwrap())
    );
    Ok(rate)
}
