//! Two processes on this machine: the owner holds a `Vec<f32>` in a Tape and
//! a `hashbrown::HashMap`'s values in a Heap, both registered with UCX; the
//! peer (this test binary again, run as a child) has the owner confirm
//! their descriptors, puts data into them and gets it back. Every byte is
//! checked on both sides, in place on the owner's: nothing is copied
//! there. Once over TCP on loopback, once over UCX's shared-memory
//! transports; no RDMA hardware is needed. Ranges outside an allocation
//! are refused on the peer's side, with the owner's memory right after it
//! checked intact; and a peer whose owner stalls or dies gets an error
//! within its timeout.
//!
//! Hostile input, over both transports: thousands of mutated and forged
//! descriptors (corrupted keys, another allocation's address under a valid
//! key and token, 8 bytes past the end) are refused by the owner and never
//! reach UCX, in a peer that survives them; and an owner whose peer puts
//! after the owner dropped its registration (without revoking, after a
//! revocation, after a revocation the peer did not answer in time) survives
//! it, run as a child so that its exit status says so.
//!
//! CI sets `UNIMEM_REQUIRE_UCX=1`, which makes any failure to set UCX up a
//! test failure; elsewhere such a test is reported `ignored` with the
//! reason (tests/harness). Every wait has a timeout, and the child is killed if it outlives its test.
//! The children's output (UCX's log lines among it: a child whose peer
//! exits on purpose logs the connection it lost) is shown only when a
//! test fails.

mod support;

#[macro_use]
mod harness;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use allocator_api2::vec::Vec;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashMap;
use support::options;
use unimem::ucx::{Context, Descriptor, ErrorMode, Link, Peers, Registered, UcxError};
use unimem::{Error, Heap, Tape};

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

/// A context for `tls`; where UCX cannot be set up the test is skipped, or
/// fails with `UNIMEM_REQUIRE_UCX` set (CI sets it).
fn context(tls: &str) -> Context {
    let settings = settings(tls);
    let settings: std::vec::Vec<(&str, &str)> =
        settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    harness::component(
        "UNIMEM_REQUIRE_UCX",
        &format!("needs UCX with UCX_TLS={tls}"),
        Context::with_settings(Peers::Trusted, &settings)
            .and_then(|context| probe(&context).map(|()| context)),
    )
}

/// Whether the transports work on this machine: two workers of `context`
/// connect (without peer error handling, which shared memory lacks, so UCX
/// logs nothing).
fn probe(context: &Context) -> Result<(), Error> {
    let owner = context.worker()?;
    let peer = context.worker()?;
    // SAFETY: the address of a worker of this process, made by UCX.
    let endpoint = unsafe { peer.connect_unchecked(&owner.address()?, Some(ErrorMode::None)) }?;
    drop(endpoint);
    Ok(())
}

unsafe extern "C" {
    // UCS's global settings (`ucs/config/global_opts.h`; libucs is linked
    // with the feature): read and changed at run time.
    fn ucs_global_opts_get_value(
        name: *const core::ffi::c_char,
        value: *mut core::ffi::c_char,
        max: usize,
    ) -> i8;
    fn ucs_global_opts_set_value(
        name: *const core::ffi::c_char,
        value: *const core::ffi::c_char,
    ) -> i8;
}

/// Runs `f` with UCX's log level in this process at `fatal`, then puts it
/// back: for tests that make a peer exit on purpose, where UCX logs the
/// connection this side lost as an error. Leaves it alone where
/// `UCX_LOG_LEVEL` is set, for whoever wants to see those lines. (The
/// level is the process's: other tests running meanwhile log less too.)
fn quiet_ucx<T>(f: impl FnOnce() -> T) -> T {
    if std::env::var_os("UCX_LOG_LEVEL").is_some() {
        return f();
    }
    let mut was = [0 as core::ffi::c_char; 32];
    // SAFETY: a NUL-terminated name and a buffer of `was.len()` bytes.
    let read =
        unsafe { ucs_global_opts_get_value(c"LOG_LEVEL".as_ptr(), was.as_mut_ptr(), was.len()) };
    // SAFETY: two NUL-terminated strings.
    unsafe { ucs_global_opts_set_value(c"LOG_LEVEL".as_ptr(), c"fatal".as_ptr()) };
    let result = f();
    if read == 0 {
        // SAFETY: `was` is NUL-terminated: UCS wrote a string shorter than
        // the buffer into it, or left it zeroed.
        unsafe { ucs_global_opts_set_value(c"LOG_LEVEL".as_ptr(), was.as_ptr()) };
    }
    result
}

/// The other process, killed if still running when dropped; its standard
/// output is read line by line (`line`) or at the end (`join`).
struct Peer(Option<Child>, Option<BufReader<ChildStdout>>, String);

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
        let mut child = command.spawn().expect("spawn the peer");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer(Some(child), Some(stdout), String::new())
    }

    /// Waits for the next line the child prints with `|>` in it (others are
    /// kept for `join`'s report), and gives what follows the mark (the
    /// test harness may have begun the line); `None` once the child closed
    /// its output (it exited).
    fn line(&mut self) -> Option<String> {
        let stdout = self.1.as_mut().unwrap();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            self.2.push_str(&line);
            if let Some((_, said)) = line.split_once("|>") {
                return Some(said.trim().to_owned());
            }
        }
    }

    /// Waits for the peer to exit; panics with its output unless it
    /// succeeded and `owner` (this side's result) is `Ok`.
    fn join<E: core::fmt::Debug>(mut self, context: &str, owner: Result<(), E>) {
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
        let mut out = core::mem::take(&mut self.2);
        let mut err = String::new();
        let _ = self.1.take().unwrap().read_to_string(&mut out);
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
    let context = context(tls);
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
        link.send_address(&worker)?;
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
        // Everything the peer holds is revoked before the registrations go:
        // it flushed, so it lets go as soon as it reads the revocation.
        assert_eq!(tape.held() + heap.held(), 1 + VALUES as usize);
        link.revoke(&worker, WAIT)?;
        assert_eq!((tape.held(), heap.held(), link.held()), (0, 0, 0));
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
    let context = Context::new(Peers::Trusted)?;
    let worker = context.worker()?;
    let mut link = Link::connect(("127.0.0.1", port), WAIT)?;
    let endpoint = worker.connect(&mut link, WAIT)?;
    let floats = Descriptor::from_bytes(&link.recv(WAIT)?)?;
    let floats = link.verify(&floats, WAIT)?;
    let floats = endpoint.remote(&floats)?;
    assert_eq!(floats.size(), FLOATS * 4);
    let count = u32::from_le_bytes(link.recv(WAIT)?[..4].try_into().unwrap());
    let mut values = std::vec::Vec::new();
    for _ in 0..count {
        let frame = link.recv(WAIT)?;
        let key = u32::from_le_bytes(frame[..4].try_into().unwrap());
        let grant = link.verify(&Descriptor::from_bytes(&frame[4..])?, WAIT)?;
        values.push((key, endpoint.remote(&grant)?));
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
fn peer_process() {
    let Some(port) = std::env::var_os(PEER_PORT) else {
        harness::skip("a process the other tests start");
    };
    let port = port.to_str().unwrap().parse().unwrap();
    if let Err(error) = peer(port) {
        panic!("peer: {error}");
    }
}

fn a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_tcp() {
    owner(
        "a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_tcp",
        "tcp",
    );
}

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
fn owner_process() {
    let Some(port) = std::env::var_os(OWNER_PORT) else {
        harness::skip("a process the other tests start");
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let context = Context::new(Peers::Trusted).unwrap();
    let worker = context.worker().unwrap();
    let tape = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let mut bytes: Vec<u8, _> = Vec::with_capacity_in(1 << 20, &*tape);
    bytes.resize(1 << 20, 0);
    let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
    link.send_address(&worker).unwrap();
    link.send(&tape.descriptor_of(&bytes).unwrap().to_bytes())
        .unwrap();
    // Answers the peer's verification while it waits.
    let _ = link.recv(WAIT);
    if std::env::var(OWNER_FAILS).as_deref() == Ok("exit") {
        // Gone at once: no endpoint closed, no worker destroyed.
        std::process::exit(0);
    }
    std::thread::sleep(Duration::from_secs(20));
}

/// A peer whose owner stops progressing, or dies, gets an error within its
/// timeout instead of waiting forever, and its worker is not used again.
fn a_peer_whose_owner_stalls_or_dies_fails_in_time() {
    let test = "a_peer_whose_owner_stalls_or_dies_fails_in_time";
    for tls in ["tcp", "posix,sysv,cma"] {
        let context = context(tls);
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
            let endpoint = connect(&worker, &mut link, tls);
            let timeout = Duration::from_secs(2);
            endpoint.set_timeout(timeout);
            let descriptor = Descriptor::from_bytes(&link.recv(WAIT).unwrap()).unwrap();
            let grant = link.verify(&descriptor, WAIT).unwrap();
            let remote = endpoint.remote(&grant).unwrap();
            link.send(b"fail now").unwrap();
            drop(link);
            if fails == "exit" {
                // Let it go before the first put.
                std::thread::sleep(Duration::from_millis(200));
            }
            let data = vec![7u8; remote.size()];
            let start = Instant::now();
            let error = quiet_ucx(|| {
                loop {
                    let put = remote.put(0, &data).and_then(|()| endpoint.flush());
                    if let Err(error) = put {
                        break error;
                    }
                    assert!(
                        start.elapsed() < 3 * timeout,
                        "UCX_TLS={tls}, owner {fails}: puts went on succeeding"
                    );
                }
            });
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
            drop(grant);
            drop(endpoint);
            drop(worker);
            drop(owner);
        }
    }
}

/// Connects `worker` to the owner at the other end of `link`. Shared
/// memory has no peer error handling: say so, rather than have UCX log the
/// failed first try.
fn connect<'w>(
    worker: &'w unimem::ucx::Worker,
    link: &mut Link,
    tls: &str,
) -> unimem::ucx::Endpoint<'w> {
    match tls {
        "tcp" => worker.connect(link, WAIT).unwrap(),
        _ => worker.connect_with(link, WAIT, ErrorMode::None).unwrap(),
    }
}

/// The child's environment variables of `mutating_peer_process`: the port
/// to connect to, and how many mutations to try.
const MUTATING_PORT: &str = "UNIMEM_UCX_TEST_MUTATING_PORT";
const MUTATIONS: usize = 2000;

/// A byte pattern, different for each `seed`.
fn pattern(len: usize, seed: u8) -> std::vec::Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// xorshift64*: the mutations are the same on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A mutation of the descriptor `bytes` (header 48 bytes, then the key):
/// one to three key bytes flipped, a key byte set to anything, any byte
/// flipped, or a forgery under the genuine key and token (the `guard`
/// allocation's range, the range 8 bytes further, 8 bytes longer).
fn mutate(bytes: &[u8], guard: (u64, u64), random: &mut Random, i: usize) -> std::vec::Vec<u8> {
    let mut m = bytes.to_vec();
    let key = 48..bytes.len();
    match i % 5 {
        0 => {
            for _ in 0..1 + random.below(3) {
                let at = key.start + random.below(key.len());
                m[at] ^= 1 << random.below(8);
            }
        }
        1 => {
            let at = key.start + random.below(key.len());
            m[at] = random.next() as u8;
        }
        2 => {
            let at = random.below(bytes.len());
            m[at] ^= (1 + random.below(255)) as u8;
        }
        _ => {
            let address = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
            let size = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
            let (address, size) = match random.below(3) {
                0 => guard,
                1 => (address + 8, size),
                _ => (address, size + 8),
            };
            m[8..16].copy_from_slice(&address.to_le_bytes());
            m[16..24].copy_from_slice(&size.to_le_bytes());
        }
    }
    m
}

/// The owner's side of `mutated_and_forged_descriptors_...`, over `tls`.
fn mutations_owner(test: &str, tls: &str) {
    let context = context(tls);
    let worker = context.worker().unwrap();
    let tape = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let mut target: Vec<u8, _> = Vec::with_capacity_in(1 << 20, &*tape);
    target.resize(1 << 20, 0);
    let mut guard: Vec<u8, _> = Vec::with_capacity_in(4096, &*tape);
    guard.resize(4096, 0xa5);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let peer = Peer::spawn_as("mutating_peer_process", &[(MUTATING_PORT, port)], tls);
    let mut parsed = std::vec::Vec::new();
    let mut served = |link: &mut Option<Link>| -> Result<(), Error> {
        let link = link.insert(Link::accept(&listener, WAIT)?);
        link.send_address(&worker)?;
        link.send(&tape.descriptor_of(&target)?.to_bytes())?;
        let mut range = (guard.as_ptr() as u64).to_le_bytes().to_vec();
        range.extend_from_slice(&(guard.len() as u64).to_le_bytes());
        link.send(&range)?;
        // Meanwhile the peer has every mutation checked, then puts with the
        // genuine descriptor.
        parsed = link.recv_serving(&worker, Duration::from_secs(300))?;
        assert!(
            target[..] == pattern(1 << 20, 9)[..],
            "{tls}: the put landed"
        );
        assert!(
            guard.iter().all(|&b| b == 0xa5),
            "{tls}: the guard is intact"
        );
        assert_eq!(tape.held(), 1, "{tls}: only the genuine descriptor is held");
        link.revoke(&worker, WAIT)?;
        link.send(b"bye")
    };
    let mut link = None;
    let result = served(&mut link);
    drop(link);
    peer.join(&format!("{test} (UCX_TLS={tls})"), result);
    println!(
        "{test}: UCX_TLS={tls}: {MUTATIONS} mutations, {} parsed and refused by the owner; \
         the genuine descriptor then put 1 MiB",
        String::from_utf8_lossy(&parsed)
    );
}

/// A peer given a descriptor that mutates it `MUTATIONS` times and has the
/// owner check every mutation that parses: each must be refused, none may
/// reach UCX (it would abort this process inside `ucp_ep_rkey_unpack` with
/// shared memory). Then the genuine descriptor works.
fn mutating_peer_process() {
    let Some(port) = std::env::var_os(MUTATING_PORT) else {
        harness::skip("a process the other tests start");
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let tls = std::env::var("UCX_TLS").unwrap();
    let context = Context::new(Peers::Trusted).unwrap();
    let worker = context.worker().unwrap();
    let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
    let endpoint = connect(&worker, &mut link, &tls);
    let bytes = link.recv(WAIT).unwrap();
    let genuine = Descriptor::from_bytes(&bytes).unwrap();
    let range = link.recv(WAIT).unwrap();
    let guard = (
        u64::from_le_bytes(range[..8].try_into().unwrap()),
        u64::from_le_bytes(range[8..].try_into().unwrap()),
    );
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for i in 0..MUTATIONS {
        let mutated = mutate(&bytes, guard, &mut random, i);
        if mutated == bytes {
            continue;
        }
        let Ok(descriptor) = Descriptor::from_bytes(&mutated) else {
            continue;
        };
        parsed += 1;
        match link.verify(&descriptor, WAIT) {
            Err(Error::Ucx(UcxError::Refused { .. })) => {}
            other => panic!("mutation {i} ({descriptor:?}): {other:?}"),
        }
    }
    assert!(parsed > MUTATIONS / 2, "{parsed} of {MUTATIONS} parsed");
    let grant = link.verify(&genuine, WAIT).unwrap();
    let remote = endpoint.remote(&grant).unwrap();
    remote.put(0, &pattern(1 << 20, 9)).unwrap();
    endpoint.flush().unwrap();
    link.send(parsed.to_string().as_bytes()).unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"bye");
    assert!(remote.is_revoked());
}

fn mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_tcp() {
    mutations_owner(
        "mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_tcp",
        "tcp",
    );
}

fn mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_shared_memory() {
    mutations_owner(
        "mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_shared_memory",
        "posix,sysv,cma",
    );
}

/// The child's environment variables of `dropping_owner_process`: the port
/// to connect to, and how it lets go of its registration (`drop`: drops it
/// while the peer holds a descriptor; `revoke`: revokes, then drops it;
/// `stalled`: revokes, gives up after a second, drops it).
const DROPPING_PORT: &str = "UNIMEM_UCX_TEST_DROPPING_PORT";
const DROPPING_WAY: &str = "UNIMEM_UCX_TEST_DROPPING_WAY";

/// An owner that shares 1 MiB of a registered Tape, then drops the
/// registration as `DROPPING_WAY` says while its peer may still put, and
/// serves on until the peer is done. Prints `|>dropped` once the
/// registration is gone, and `|>landed` if the peer's late put landed in the
/// memory it kept.
fn dropping_owner_process() {
    let Some(port) = std::env::var_os(DROPPING_PORT) else {
        harness::skip("a process the other tests start");
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let way = std::env::var(DROPPING_WAY).unwrap();
    let context = Context::new(Peers::Trusted).unwrap();
    let worker = context.worker().unwrap();
    let tape = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let mut target: Vec<u8, _> = Vec::with_capacity_in(1 << 20, &*tape);
    target.resize(1 << 20, 0);
    let at = target.as_ptr();
    let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
    link.send_address(&worker).unwrap();
    link.send(&tape.descriptor_of(&target).unwrap().to_bytes())
        .unwrap();
    assert_eq!(link.recv_serving(&worker, WAIT).unwrap(), b"holding");
    // (The first 64 bytes may hold a later put already.)
    assert!(target[64..] == pattern(1 << 20, 1)[64..]);
    assert_eq!(tape.held(), 1);
    let kept = match way.as_str() {
        "drop" => true,
        "revoke" => {
            link.revoke(&worker, WAIT).unwrap();
            assert_eq!(tape.held(), 0);
            link.send(b"revoked").unwrap();
            false
        }
        "stalled" => {
            let revoked = link.revoke(&worker, Duration::from_secs(1));
            assert!(revoked.is_err(), "{revoked:?}");
            assert_eq!(tape.held(), 1);
            true
        }
        other => panic!("unknown way {other}"),
    };
    drop(target);
    drop(tape);
    println!("|>dropped");
    assert_eq!(link.recv_serving(&worker, WAIT).unwrap(), b"done");
    if kept {
        // SAFETY: the registration was dropped while held, so its Tape and
        // pages were kept; the peer flushed before saying "done".
        let landed = unsafe { std::slice::from_raw_parts(at, 1 << 20) };
        if landed == &pattern(1 << 20, 2)[..] {
            println!("|>landed");
        }
    }
}

/// A peer holds a descriptor while its owner (a child) drops the
/// registration: without revoking, after revoking, after a revocation the
/// peer did not answer. The owner never dies of the peer's next put: it
/// kept the memory (the put lands there), or the peer refused to send it.
fn a_put_after_the_owner_dropped_its_registration_does_not_kill_the_owner() {
    let test = "a_put_after_the_owner_dropped_its_registration_does_not_kill_the_owner";
    for tls in ["tcp", "posix,sysv,cma"] {
        let context = context(tls);
        for way in ["drop", "revoke", "stalled"] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let mut owner = Peer::spawn_as(
                "dropping_owner_process",
                &[(DROPPING_PORT, port), (DROPPING_WAY, way.to_owned())],
                tls,
            );
            let worker = context.worker().unwrap();
            let mut run = || -> Result<bool, String> {
                let failed = |error: Error| error.to_string();
                let mut link = Link::accept(&listener, WAIT).map_err(failed)?;
                let endpoint = connect(&worker, &mut link, tls);
                let descriptor = Descriptor::from_bytes(&link.recv(WAIT).map_err(failed)?);
                let grant = link
                    .verify(&descriptor.map_err(failed)?, WAIT)
                    .map_err(failed)?;
                let remote = endpoint.remote(&grant).map_err(failed)?;
                remote.put(0, &pattern(1 << 20, 1)).map_err(failed)?;
                endpoint.flush().map_err(failed)?;
                let late = pattern(1 << 20, 2);
                if way == "stalled" {
                    // Not flushed, and the link not read until after the
                    // late put (the same bytes as its first 64).
                    remote.put(0, &late[..64]).map_err(failed)?;
                }
                link.send(b"holding").map_err(failed)?;
                if way == "revoke" {
                    let said = link.recv(WAIT).map_err(failed)?;
                    if said != b"revoked" {
                        return Err(format!("the owner said {said:?}"));
                    }
                }
                let said = owner.line();
                if said.as_deref() != Some("dropped") {
                    return Err(format!("the owner said {said:?}, not \"dropped\""));
                }
                if way == "revoke" {
                    match remote.put(0, &late) {
                        Err(Error::Ucx(UcxError::Revoked)) => {}
                        other => return Err(format!("a revoked put: {other:?}")),
                    }
                } else {
                    // The owner dropped its registration; this side has not
                    // read the link, so the remote was not told.
                    remote.put(0, &late).map_err(failed)?;
                    endpoint.flush().map_err(failed)?;
                }
                link.send(b"done").map_err(failed)?;
                let landed = way != "revoke" && owner.line().as_deref() == Some("landed");
                drop(remote);
                drop(grant);
                drop(endpoint);
                Ok(landed)
            };
            let result = run();
            let landed = matches!(result, Ok(true));
            owner.join(
                &format!("{test} (UCX_TLS={tls}, {way})"),
                result.map(|_| ()),
            );
            assert!(
                landed || way == "revoke",
                "{tls}, {way}: the late put did not land in the kept memory"
            );
            println!("{test}: UCX_TLS={tls}, {way}: the owner survived the late put");
        }
    }
}

fn main() {
    harness::main(&[
        test!(peer_process),
        test!(a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_tcp),
        test!(a_peer_puts_and_gets_a_vec_in_a_tape_and_a_map_in_a_heap_over_shared_memory),
        test!(owner_process),
        test!(a_peer_whose_owner_stalls_or_dies_fails_in_time),
        test!(mutating_peer_process),
        test!(mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_tcp),
        test!(mutated_and_forged_descriptors_are_refused_and_never_reach_ucx_over_shared_memory),
        test!(dropping_owner_process),
        test!(a_put_after_the_owner_dropped_its_registration_does_not_kill_the_owner),
    ]);
}
