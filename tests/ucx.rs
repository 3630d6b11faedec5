//! Two processes on this machine: the owner holds a `Vec<f32>` in a Tape and
//! a `hashbrown::HashMap`'s values in a Heap, both registered with UCX; the
//! peer (this test binary again, run as a child) puts data into them and
//! gets it back. Every byte is checked on both sides, in place on the
//! owner's: nothing is copied there. Once over TCP on loopback, once over
//! UCX's shared-memory transports; no RDMA hardware is needed. Ranges
//! outside an allocation are refused on the peer's side, with the owner's
//! memory right after it checked intact; and a peer whose owner stalls or
//! dies gets an error within its timeout.
//!
//! CI sets `UNIMEM_REQUIRE_UCX=1`, which makes any failure to set UCX up a
//! test failure; elsewhere such a test prints `SKIPPED <test>: <why>`. Every
//! wait has a timeout, and the child is killed if it outlives its test.
#![cfg(all(feature = "ucx", target_os = "linux"))]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use allocator_api2::vec::Vec;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashMap;
use unimem::ucx::{Context, Descriptor, ErrorMode, Link, Registered, UcxError};
use unimem::{BlockOptions, Error, Heap, Pinning, Tape};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// Floats in the owner's Vec (4 MiB).
const FLOATS: usize = 1 << 20;

/// Values in the owner's map, and the size of value `k`.
const VALUES: u32 = 24;
fn value_len(k: u32) -> usize {
    // 1 KiB to 128 KiB, and a few odd sizes.
    (1024 << (k % 8)) + (k as usize % 3) * 17
}

/// The child's environment variable naming the owner's port.
const PEER_PORT: &str = "UNIMEM_UCX_TEST_PEER_PORT";

fn options() -> BlockOptions<'static> {
    BlockOptions::new().pinning(Pinning::BestEffort).quiet(true)
}

/// A float of pattern `seed` at index `i` (exact in `f32`).
fn float(i: usize, seed: u32) -> f32 {
    (i % (1 << 20)) as f32 * 0.5 + seed as f32
}

/// A byte of pattern `seed` at index `i` of value `key`.
fn byte(key: u32, i: usize, seed: u32) -> u8 {
    (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(key * 131 + seed)
        .rotate_right(13) as u8
}

fn floats_as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: `f32` has no padding and any byte may be read as `u8`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), size_of_val(v)) }
}

fn floats_as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid `f32`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), size_of_val(v)) }
}

/// UCX's settings for a transport: `tcp` on loopback, or shared memory.
fn settings(tls: &str) -> [(&'static str, String); 2] {
    [("TLS", tls.to_owned()), ("NET_DEVICES", "lo".to_owned())]
}

/// Whether `UNIMEM_REQUIRE_UCX` is set (to anything but empty or `0`):
/// then a failure to set UCX up fails the test.
fn required() -> bool {
    std::env::var_os("UNIMEM_REQUIRE_UCX").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A context for `tls`, or `None` after saying why the test is skipped.
fn context(test: &str, tls: &str) -> Option<Context> {
    let settings = settings(tls);
    let settings: std::vec::Vec<(&str, &str)> =
        settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match Context::with_settings(&settings).and_then(|context| probe(&context).map(|()| context)) {
        Ok(context) => Some(context),
        Err(error) if !required() => {
            println!("SKIPPED {test}: UCX with UCX_TLS={tls}: {error}");
            None
        }
        Err(error) => panic!("{test}: UNIMEM_REQUIRE_UCX is set, yet UCX_TLS={tls}: {error}"),
    }
}

/// Whether the transports work on this machine: two workers of `context`
/// connect (without peer error handling, which shared memory lacks, so UCX
/// logs nothing).
fn probe(context: &Context) -> Result<(), Error> {
    let owner = context.worker()?;
    let peer = context.worker()?;
    let endpoint = peer.connect_with(&owner.address()?, ErrorMode::None)?;
    drop(endpoint);
    Ok(())
}

/// The peer process, killed if still running when dropped.
struct Peer(Option<Child>);

impl Peer {
    /// This test binary again, running only `peer_process`.
    fn spawn(port: u16, tls: &str) -> Peer {
        Peer::spawn_as("peer_process", &[(PEER_PORT, port.to_string())], tls)
    }

    /// This test binary again, running only the test `name`, with `env`.
    fn spawn_as(name: &str, env: &[(&str, String)], tls: &str) -> Peer {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("UCX_TLS", tls)
            .env("UCX_NET_DEVICES", "lo")
            .env("UCX_LOG_FILE", "stderr")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Peer(Some(command.spawn().expect("spawn the peer")))
    }

    /// Waits for the peer to exit; panics with its output unless it
    /// succeeded and `owner` (this side's result) is `Ok`.
    fn join(mut self, context: &str, owner: Result<(), Error>) {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        match (status, owner) {
            (Some(status), Ok(())) if status.success() => {}
            (status, owner) => panic!(
                "{context}: owner: {owner:?}, peer: {status:?} (None: killed after {WAIT:?})\n\
                 --- peer stdout\n{out}\n--- peer stderr\n{err}"
            ),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The owner's side of `put_and_get`, over `tls`.
fn owner(test: &str, tls: &str) {
    let Some(context) = context(test, tls) else {
        return;
    };
    let worker = context.worker().unwrap();

    // A Vec<f32> in a Tape, with a guard allocation right after it: inside
    // the same registered range, so only the range check keeps peers off it.
    let tape = Tape::open_with(8 << 20, &options()).unwrap();
    let tape = Registered::new(&context, tape).unwrap();
    let mut floats: Vec<f32, _> = Vec::with_capacity_in(FLOATS, &*tape);
    floats.resize(FLOATS, -1.0);
    let mut guard: Vec<u8, _> = Vec::with_capacity_in(4096, &*tape);
    guard.resize(4096, 0xa5);

    // A HashMap in a Heap registered before the map exists: the memory it
    // commits for the map and its values is mapped as it is committed.
    let heap = Heap::lazy_with(64 << 20, options()).open_now().unwrap();
    let heap = Registered::new(&context, heap).unwrap();
    let mut map: HashMap<u32, Vec<u8, &Heap>, DefaultHashBuilder, &Heap> =
        HashMap::with_hasher_in(DefaultHashBuilder::default(), &*heap);
    for key in 0..VALUES {
        let mut value = Vec::with_capacity_in(value_len(key), &*heap);
        value.resize(value_len(key), 0);
        map.insert(key, value);
    }
    assert!(heap.take_error().is_none());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = Peer::spawn(listener.local_addr().unwrap().port(), tls);
    let mut served = |link: &mut Option<Link>| -> Result<(), Error> {
        let link = link.insert(Link::accept(&listener, WAIT)?);
        link.send(&worker.address()?)?;
        link.send(&tape.descriptor_of(&floats)?.to_bytes())?;
        link.send(&VALUES.to_le_bytes())?;
        for (key, value) in &map {
            let mut frame = key.to_le_bytes().to_vec();
            frame.extend_from_slice(&heap.descriptor_of(value)?.to_bytes());
            link.send(&frame)?;
        }

        // The peer puts pattern 1 everywhere, flushes, and says so;
        // meanwhile this side progresses its worker, which writes the bytes.
        assert_eq!(link.recv_serving(&worker, WAIT)?, b"put");
        for (i, &x) in floats.iter().enumerate() {
            assert_eq!(x.to_bits(), float(i, 1).to_bits(), "{tls}: float {i}");
        }
        for (&key, value) in &map {
            for (i, &b) in value.iter().enumerate() {
                assert_eq!(b, byte(key, i, 1), "{tls}: byte {i} of value {key}");
            }
        }
        assert!(
            guard.iter().all(|&b| b == 0xa5),
            "{tls}: the guard was written"
        );

        // This side writes pattern 2 in place; the peer gets it back.
        for (i, x) in floats.iter_mut().enumerate() {
            *x = float(i, 2);
        }
        for (&key, value) in map.iter_mut() {
            for (i, b) in value.iter_mut().enumerate() {
                *b = byte(key, i, 2);
            }
        }
        link.send(b"get")?;
        assert_eq!(link.recv_serving(&worker, WAIT)?, b"got");
        // The peer tried ranges past the Vec's end (into the guard):
        // refused on its side, nothing written here.
        assert!(
            guard.iter().all(|&b| b == 0xa5),
            "{tls}: the guard was written"
        );
        link.send(b"bye")
    };
    let mut link = None;
    let result = served(&mut link);
    drop(link);
    peer.join(&format!("{test} (UCX_TLS={tls})"), result);
    println!(
        "{test}: UCX_TLS={tls}: {} floats and {} map values put, checked, rewritten, got back",
        floats.len(),
        map.len()
    );
}

/// The peer's side: connects, puts, gets and checks, as `owner` expects.
fn peer(port: u16) -> Result<(), Error> {
    let context = Context::new()?;
    let worker = context.worker()?;
    let mut link = Link::connect(("127.0.0.1", port), WAIT)?;
    let endpoint = worker.connect(&link.recv(WAIT)?)?;
    let floats = endpoint.remote(&Descriptor::from_bytes(&link.recv(WAIT)?)?)?;
    assert_eq!(floats.size(), FLOATS * 4);
    let count = u32::from_le_bytes(link.recv(WAIT)?[..4].try_into().unwrap());
    let mut values = std::vec::Vec::new();
    for _ in 0..count {
        let frame = link.recv(WAIT)?;
        let key = u32::from_le_bytes(frame[..4].try_into().unwrap());
        values.push((key, endpoint.remote(&Descriptor::from_bytes(&frame[4..])?)?));
    }

    // Puts: the floats in 64 KiB pieces in flight together, each value in
    // one put; then a flush, after which the owner's memory holds them.
    let mine: std::vec::Vec<f32> = (0..FLOATS).map(|i| float(i, 1)).collect();
    floats.batch(|batch| {
        for (i, piece) in floats_as_bytes(&mine).chunks(64 << 10).enumerate() {
            batch.put(i * (64 << 10), piece)?;
        }
        Ok(())
    })?;
    for (key, remote) in &values {
        let bytes: std::vec::Vec<u8> = (0..remote.size()).map(|i| byte(*key, i, 1)).collect();
        remote.put(0, &bytes)?;
    }
    endpoint.flush()?;
    link.send(b"put")?;

    // Gets of what the owner then wrote, checked byte by byte.
    assert_eq!(link.recv(WAIT)?, b"get");
    let mut got = vec![0f32; FLOATS];
    floats.get(0, floats_as_bytes_mut(&mut got))?;
    for (i, x) in got.iter().enumerate() {
        assert_eq!(x.to_bits(), float(i, 2).to_bits(), "float {i}");
    }
    for (key, remote) in &values {
        let mut bytes = vec![0; remote.size()];
        // In two halves, the second one byte long at least.
        let half = remote.size() / 2;
        let (first, second) = bytes.split_at_mut(half);
        remote.get(0, first)?;
        remote.get(half, second)?;
        for (i, &b) in bytes.iter().enumerate() {
            assert_eq!(b, byte(*key, i, 2), "byte {i} of value {key}");
        }
    }

    // Past the end (the guard lies there), straddling the end, and offsets
    // that overflow: refused here, before anything is sent.
    let end = floats.size();
    for (offset, len) in [
        (end, 1),
        (end - 4, 8),
        (end + 4096, 16),
        (usize::MAX - 3, 8),
    ] {
        let put = floats.put(offset, &vec![0xee; len]);
        assert!(
            matches!(put, Err(Error::Ucx(UcxError::OutOfRange { .. }))),
            "put of {len} at {offset}: {put:?}"
        );
        let get = floats.get(offset, &mut vec![0; len]);
        assert!(
            matches!(get, Err(Error::Ucx(UcxError::OutOfRange { .. }))),
            "get of {len} at {offset}: {get:?}"
        );
    }
    // The endpoint still works after the refusals.
    floats.put(0, &float(0, 2).to_ne_bytes())?;
    endpoint.flush()?;
    link.send(b"got")?;
    assert_eq!(link.recv(WAIT)?, b"bye");
    drop(values);
    drop(floats);
    drop(endpoint);
    Ok(())
}

/// Runs the peer's side when the owner spawned this binary as its peer;
/// otherwise does nothing.
#[test]
fn peer_process() {
    let Some(port) = std::env::var_os(PEER_PORT) else {
        return;
    };
    let port = port.to_str().unwrap().parse().unwrap();
    if let Err(error) = peer(port) {
        panic!("peer: {error}");
    }
}

#[test]
fn a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_tcp() {
    owner(
        "a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_tcp",
        "tcp",
    );
}

#[test]
fn a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_shared_memory() {
    owner(
        "a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_shared_memory",
        "posix,sysv,cma",
    );
}

/// The child's environment variables of `owner_process`: the port to
/// connect to, and how to fail (`stall`: never progress; `exit`: leave).
const OWNER_PORT: &str = "UNIMEM_UCX_TEST_OWNER_PORT";
const OWNER_FAILS: &str = "UNIMEM_UCX_TEST_OWNER_FAILS";

/// An owner that shares a registered Tape, then stops serving: it never
/// progresses its worker, or it exits without closing anything.
#[test]
fn owner_process() {
    let Some(port) = std::env::var_os(OWNER_PORT) else {
        return;
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let context = Context::new().unwrap();
    let worker = context.worker().unwrap();
    let tape = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let mut bytes: Vec<u8, _> = Vec::with_capacity_in(1 << 20, &*tape);
    bytes.resize(1 << 20, 0);
    let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
    link.send(&worker.address().unwrap()).unwrap();
    link.send(&tape.descriptor_of(&bytes).unwrap().to_bytes())
        .unwrap();
    let _ = link.recv(WAIT);
    if std::env::var(OWNER_FAILS).as_deref() == Ok("exit") {
        // Gone at once: no endpoint closed, no worker destroyed.
        std::process::exit(0);
    }
    std::thread::sleep(Duration::from_secs(20));
}

/// A peer whose owner stops progressing, or dies, gets an error within its
/// timeout instead of waiting forever, and its worker is not used again.
#[test]
fn a_peer_whose_owner_stalls_or_dies_fails_in_time() {
    let test = "a_peer_whose_owner_stalls_or_dies_fails_in_time";
    for tls in ["tcp", "posix,sysv,cma"] {
        let Some(context) = context(test, tls) else {
            return;
        };
        for fails in ["stall", "exit"] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let owner = Peer::spawn_as(
                "owner_process",
                &[(OWNER_PORT, port), (OWNER_FAILS, fails.to_owned())],
                tls,
            );
            let worker = context.worker().unwrap();
            let mut link = Link::accept(&listener, WAIT).unwrap();
            let address = link.recv(WAIT).unwrap();
            // Shared memory has no peer error handling: say so, rather than
            // have UCX log the failed first try.
            let endpoint = match tls {
                "tcp" => worker.connect(&address).unwrap(),
                _ => worker.connect_with(&address, ErrorMode::None).unwrap(),
            };
            let timeout = Duration::from_secs(2);
            endpoint.set_timeout(timeout);
            let descriptor = Descriptor::from_bytes(&link.recv(WAIT).unwrap()).unwrap();
            let remote = endpoint.remote(&descriptor).unwrap();
            link.send(b"fail now").unwrap();
            drop(link);
            if fails == "exit" {
                // Let it go before the first put.
                std::thread::sleep(Duration::from_millis(200));
            }
            let data = vec![7u8; remote.size()];
            let start = Instant::now();
            let error = loop {
                let put = remote.put(0, &data).and_then(|()| endpoint.flush());
                if let Err(error) = put {
                    break error;
                }
                assert!(
                    start.elapsed() < 3 * timeout,
                    "UCX_TLS={tls}, owner {fails}: puts went on succeeding"
                );
            };
            let took = start.elapsed();
            println!("{test}: UCX_TLS={tls}, owner {fails}: {error} after {took:?}");
            assert!(took < 3 * timeout, "UCX_TLS={tls}, owner {fails}: {took:?}");
            assert!(
                matches!(
                    error,
                    Error::Ucx(
                        UcxError::TimedOut { .. } | UcxError::Call { .. } | UcxError::Closed { .. }
                    )
                ),
                "{error:?}"
            );
            // Whatever failed, nothing more goes through this endpoint.
            assert!(
                remote
                    .put(0, &data[..8])
                    .and_then(|()| endpoint.flush())
                    .is_err()
            );
            drop(remote);
            drop(endpoint);
            drop(worker);
            drop(owner);
        }
    }
}
