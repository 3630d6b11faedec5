//! Tests of the UCX module inside one process: an owner worker served on a
//! thread of its own, a peer worker on the test's thread, over whatever
//! transports UCX picks between two workers of one process (`UCX_TLS`
//! chooses). `tests/ucx.rs` runs two processes.
//!
//! Where UCX cannot be set up, each test prints `SKIPPED` and why, unless
//! `UNIMEM_REQUIRE_UCX` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::*;
use crate::{BlockOptions, Error, Pinning, Tape};

fn options() -> BlockOptions<'static> {
    BlockOptions::new().pinning(Pinning::BestEffort).quiet(true)
}

/// Whether `UNIMEM_REQUIRE_UCX` is set (to anything but empty or `0`):
/// then a failure to set UCX up fails the test.
fn required() -> bool {
    std::env::var_os("UNIMEM_REQUIRE_UCX").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A context, or `None` after saying why the test is skipped.
fn context(test: &str) -> Option<Context> {
    match Context::new() {
        Ok(context) => Some(context),
        Err(error) if !required() => {
            println!("SKIPPED {test}: {error}");
            None
        }
        Err(error) => panic!("{test}: UNIMEM_REQUIRE_UCX is set, yet: {error}"),
    }
}

/// An owner worker progressed on its own thread until dropped.
struct Owner {
    address: Vec<u8>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Owner {
    /// `serve`: whether the thread progresses the worker, or only holds it.
    fn start(context: &Context, serve: bool) -> Owner {
        let worker = context.worker().unwrap();
        let address = worker.address().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            // Acquire: pairs with the Release store in `drop`.
            while !flag.load(Ordering::Acquire) {
                if serve {
                    worker.serve_for(Duration::from_millis(1));
                } else {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Owner {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load on the owner's thread.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn pattern(len: usize, seed: u8) -> std::vec::Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_peer_puts_into_and_gets_from_a_registered_tape() {
    let Some(context) = context("a_peer_puts_into_and_gets_from_a_registered_tape") else {
        return;
    };
    let tape = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let shared = tape.take(1 << 20, 64).unwrap();
    let after = tape.take(4096, 64).unwrap();
    // SAFETY: both are fresh allocations of these sizes in the Tape.
    unsafe {
        shared.write_bytes(0, 1 << 20);
        after.write_bytes(0x5a, 4096);
    }
    let descriptor = tape.descriptor_range(shared, 1 << 20).unwrap();
    assert_eq!(descriptor.address(), shared.addr() as u64);
    let descriptor = Descriptor::from_bytes(&descriptor.to_bytes()).unwrap();

    let owner = Owner::start(&context, true);
    let worker = context.worker().unwrap();
    let endpoint = worker.connect(&owner.address).unwrap();
    let remote = endpoint.remote(&descriptor).unwrap();
    assert_eq!(remote.size(), 1 << 20);

    let data = pattern(1 << 20, 7);
    remote.put(0, &data[..4096]).unwrap();
    remote.put(4096, &data[4096..]).unwrap();
    endpoint.flush().unwrap();
    // SAFETY: the peer flushed; nothing writes the allocation any more.
    let landed = unsafe { core::slice::from_raw_parts(shared, 1 << 20) };
    assert!(landed == &data[..], "the owner's bytes are what was put");

    let mut back = vec![0; 1 << 20];
    remote.get(0, &mut back).unwrap();
    assert!(back == data, "the bytes got are the owner's");

    // Outside the allocation: refused before anything is sent, so the
    // allocation after it (registered too, under the same key) is intact.
    for (offset, len) in [(1 << 20, 1), ((1 << 20) - 4, 8), (usize::MAX, 2)] {
        match remote.put(offset, &data[..len]) {
            Err(Error::Ucx(UcxError::OutOfRange {
                offset: o,
                len: l,
                registered,
            })) => assert_eq!((o, l, registered), (offset, len, 1 << 20)),
            other => panic!("put of {len} at {offset}: {other:?}"),
        }
    }
    assert!(matches!(
        remote.get((1 << 20) - 1, &mut back[..2]),
        Err(Error::Ucx(UcxError::OutOfRange { .. }))
    ));
    endpoint.flush().unwrap();
    // SAFETY: as above.
    let untouched = unsafe { core::slice::from_raw_parts(after, 4096) };
    assert!(untouched.iter().all(|&b| b == 0x5a));
    // Zero bytes at the end are inside.
    remote.put(1 << 20, &[]).unwrap();

    // Many in flight, from and into registered memory on this side.
    let local = Registered::new(&context, Tape::open_with(4 << 20, &options()).unwrap()).unwrap();
    let mut source: allocator_api2::vec::Vec<u8, _> =
        allocator_api2::vec::Vec::with_capacity_in(1 << 20, &*local);
    source.extend_from_slice(&pattern(1 << 20, 99));
    let mut sink: allocator_api2::vec::Vec<u8, _> =
        allocator_api2::vec::Vec::with_capacity_in(1 << 20, &*local);
    sink.resize(1 << 20, 0);
    remote
        .batch(|batch| {
            for (i, chunk) in source.chunks(4096).enumerate() {
                batch.put_from(i * 4096, chunk, &local)?;
            }
            Ok(())
        })
        .unwrap();
    endpoint.flush().unwrap();
    remote
        .batch(|batch| {
            for (i, chunk) in sink.chunks_mut(64 << 10).enumerate() {
                batch.get_into(i * (64 << 10), chunk, &local)?;
            }
            Ok(())
        })
        .unwrap();
    assert!(sink[..] == source[..]);
    // SAFETY: as above.
    let landed = unsafe { core::slice::from_raw_parts(shared, 1 << 20) };
    assert!(landed == &source[..]);

    // A batch whose closure panics still waits for what it started before
    // its buffers go back.
    let mut caught = vec![0u8; 1 << 20];
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        remote.batch(|batch| -> Result<(), Error> {
            batch.get(0, &mut caught)?;
            panic!("in the batch");
        })
    }));
    assert!(panicked.is_err());
    assert!(caught[..] == source[..]);
    drop(remote);
    drop(endpoint);
}

#[test]
fn memory_committed_later_is_mapped_part_by_part() {
    let Some(context) = context("memory_committed_later_is_mapped_part_by_part") else {
        return;
    };
    let tape = Tape::open_with(1 << 20, &options().capacity(16 << 20)).unwrap();
    let tape = Registered::new(&context, tape).unwrap();
    assert_eq!(tape.chunks(), 1);
    let first = tape.take(512 << 10, 64).unwrap();
    let grown = tape.take(6 << 20, 64).unwrap();
    assert!(tape.chunks() > 1, "the growth was mapped");
    assert!(tape.take_error().is_none());
    assert!(tape.descriptor_range(first, 512 << 10).is_ok());
    // The grown allocation starts in the first part and ends in the next.
    match tape.descriptor_range(grown, 6 << 20) {
        Err(Error::Ucx(UcxError::NotRegistered { address, len })) => {
            assert_eq!((address, len), (grown.addr(), 6 << 20));
        }
        other => panic!("{other:?}"),
    }
    let last = tape.ranges().last().copied().unwrap();
    assert!(
        tape.descriptor_range(last.host as *const u8, last.len)
            .is_ok()
    );
    assert!(matches!(
        tape.descriptor_range(first, 0),
        Err(Error::ZeroSize)
    ));
    let outside = [0u8; 16];
    assert!(matches!(
        tape.descriptor_of(&outside),
        Err(Error::Ucx(UcxError::NotRegistered { .. }))
    ));
    // Unmapped, and the Tape given back with its allocations.
    let tape = tape.into_inner();
    assert!(tape.owns(grown));
}

#[test]
fn a_timed_out_operation_poisons_the_worker() {
    let Some(context) = context("a_timed_out_operation_poisons_the_worker") else {
        return;
    };
    let tape = Registered::new(&context, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let shared = tape.take(64 << 10, 64).unwrap();
    let descriptor = tape.descriptor_range(shared, 64 << 10).unwrap();
    // The owner holds its worker but never progresses it.
    let owner = Owner::start(&context, false);
    let worker = context.worker().unwrap();
    let endpoint = worker.connect(&owner.address).unwrap();
    endpoint.set_timeout(Duration::from_millis(300));
    let remote = endpoint.remote(&descriptor).unwrap();
    let data = vec![1u8; 64 << 10];
    let put = remote.put(0, &data).and_then(|()| endpoint.flush());
    assert!(
        matches!(put, Err(Error::Ucx(UcxError::TimedOut { .. }))),
        "{put:?}"
    );
    assert!(worker.is_poisoned());
    assert!(matches!(
        remote.put(0, &data),
        Err(Error::Ucx(UcxError::Closed { .. }))
    ));
    assert!(!worker.progress());
    drop(remote);
    drop(endpoint);
    drop(worker);
}

#[test]
fn bad_worker_addresses_are_refused_before_ucx_reads_them() {
    let Some(context) = context("bad_worker_addresses_are_refused_before_ucx_reads_them") else {
        return;
    };
    let worker = context.worker().unwrap();
    for address in [&[][..], &vec![0u8; MAX_ADDRESS + 1][..]] {
        assert!(matches!(
            worker.connect(address),
            Err(Error::Ucx(UcxError::BadDescriptor { .. }))
        ));
    }
}

#[test]
fn a_link_frames_and_bounds_what_it_carries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let wait = Duration::from_secs(10);
    let peer = thread::spawn(move || {
        let mut link = Link::connect(("127.0.0.1", port), wait).unwrap();
        link.send(b"hello").unwrap();
        link.send(&[]).unwrap();
        assert!(link.send(&vec![0; MAX_FRAME + 1]).is_err());
        let echoed = link.recv(wait).unwrap();
        assert_eq!(echoed, b"hello");
        // A frame whose length is past the limit, sent by hand.
        use std::io::Write;
        let mut stream = link.stream().try_clone().unwrap();
        stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let _ = link.recv(wait);
    });
    let mut link = Link::accept(&listener, wait).unwrap();
    let frame = link.recv(wait).unwrap();
    assert_eq!(frame, b"hello");
    assert_eq!(link.recv(wait).unwrap(), b"");
    link.send(&frame).unwrap();
    match link.recv(wait) {
        Err(Error::Ucx(UcxError::Bootstrap { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
        }
        other => panic!("{other:?}"),
    }
    drop(link);
    peer.join().unwrap();

    // Nobody connects: a timeout, not a hang.
    match Link::accept(&listener, Duration::from_millis(50)) {
        Err(Error::Ucx(UcxError::Bootstrap { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
        }
        other => panic!("{other:?}"),
    }
    // Something that is not a link.
    let port = listener.local_addr().unwrap().port();
    let stranger = thread::spawn(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(100));
    });
    assert!(matches!(
        Link::accept(&listener, wait),
        Err(Error::Ucx(UcxError::Bootstrap { .. }))
    ));
    stranger.join().unwrap();
}

#[test]
fn errors_name_the_call_and_the_status() {
    let error = Error::from(UcxError::call("ucp_mem_map", sys::UCS_ERR_UNREACHABLE));
    let text = error.to_string();
    assert!(text.contains("ucp_mem_map"), "{text}");
    assert!(text.contains("Destination is unreachable"), "{text}");
    assert!(text.contains("-6"), "{text}");
    assert!(format!("{error:?}").starts_with("Ucx: "));
    let range = UcxError::OutOfRange {
        offset: 10,
        len: 8,
        registered: 12,
    };
    assert!(range.to_string().contains("nothing was sent"));
}
