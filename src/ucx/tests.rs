//! Tests of the UCX module inside one process: an owner worker served on a
//! thread of its own, a peer worker on the test's thread, over whatever
//! transports UCX picks between two workers of one process (`UCX_TLS`
//! chooses). `tests/ucx.rs` runs two processes.
//!
//! Where UCX cannot be set up, each test prints `SKIPPED` and why, unless
//! `UNIMEM_REQUIRE_UCX` is set. The link's confirm, revoke and release
//! protocol is tested here without UCX's transports too, with a table of
//! issued descriptors whose keys no UCX call ever reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::grant::{Issued, Track};
use super::*;
use crate::testing::options;
use crate::{Error, Tape};

/// Whether `UNIMEM_REQUIRE_UCX` is set (to anything but empty or `0`):
/// then a failure to set UCX up fails the test.
fn required() -> bool {
    std::env::var_os("UNIMEM_REQUIRE_UCX").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A context, or `None` after saying why the test is skipped.
fn context(test: &str) -> Option<Context> {
    match Context::new(Peers::Trusted) {
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
    // SAFETY: the address of a worker of this process, made by UCX.
    let endpoint = unsafe { worker.connect_unchecked(&owner.address, None) }.unwrap();
    // SAFETY: the bytes `descriptor_range` made in this process, on the
    // context of the owner's worker; the registration outlives the remote.
    let remote = unsafe { endpoint.remote_unchecked(&descriptor) }.unwrap();
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
    let last = tape.spans().last().copied().unwrap();
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
    let tape = tape.into_inner().unwrap();
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
    // SAFETY: as in the test above.
    let endpoint = unsafe { worker.connect_unchecked(&owner.address, None) }.unwrap();
    endpoint.set_timeout(Duration::from_millis(300));
    // SAFETY: as in the test above.
    let remote = unsafe { endpoint.remote_unchecked(&descriptor) }.unwrap();
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
        // SAFETY: refused for its length before UCX reads it.
        let connected = unsafe { worker.connect_unchecked(address, None) };
        assert!(matches!(
            connected,
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

const WAIT: Duration = Duration::from_secs(30);

/// A key framed as UCX 1.13 frames one (two domains, parts of 3 and 0
/// bytes), for descriptors that never reach UCX.
fn fake_key() -> std::vec::Vec<u8> {
    let mut key = 0b101u64.to_ne_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&[3, 0xaa, 0xbb, 0xcc, 0]);
    key
}

/// Runs `owner` on a thread with the accepting end of a link; gives the
/// connecting end.
fn link_pair<T: Send + 'static>(
    owner: impl FnOnce(Link) -> T + Send + 'static,
) -> (Link, thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = thread::spawn(move || owner(Link::accept(&listener, WAIT).unwrap()));
    (Link::connect(("127.0.0.1", port), WAIT).unwrap(), thread)
}

/// The owner's side of the protocol tests: answers `held` with the link's
/// and the table's holds, `revoke` by revoking (300 ms at most, with no
/// worker), until `bye` or the link fails; gives the final holds.
fn serve_commands(mut link: Link, issued: &Issued) -> (usize, usize) {
    while let Ok(command) = link.recv(WAIT) {
        match &command[..] {
            b"held" => {
                let held = [link.held() as u8, issued.held() as u8];
                link.send(&held).unwrap();
            }
            b"revoke" => {
                let tokens = link.held_tags();
                let result = link.revoke_tags(tokens, None, Duration::from_millis(300));
                link.send(if result.is_ok() { b"ok" } else { b"timed out" })
                    .unwrap();
            }
            b"bye" => break,
            other => panic!("unknown command {other:?}"),
        }
    }
    (link.held(), issued.held())
}

fn refused(result: &Result<Grant, Error>) -> bool {
    matches!(result, Err(Error::Ucx(UcxError::Refused { .. })))
}

/// What the owner answers `held` with: the link's holds and the table's.
fn held(link: &mut Link) -> [u8; 2] {
    link.send(b"held").unwrap();
    link.recv(WAIT).unwrap().try_into().unwrap()
}

#[test]
fn the_owner_confirms_exactly_the_descriptors_it_issued_and_counts_who_holds_them() {
    let issued = Issued::new(0x5eed);
    let genuine = issued
        .issue(0x7f00_0010_0000, 4096, || Ok(fake_key()))
        .unwrap();
    let guard = issued
        .issue(0x7f00_0010_1000, 64, || Ok(fake_key()))
        .unwrap();
    let again = issued.issue(0x7f00_0010_0000, 4096, || unreachable!());
    assert_eq!(again.unwrap(), genuine, "a range keeps its descriptor");
    assert_ne!(genuine.token(), guard.token());
    let (mut link, owner) = link_pair({
        let issued = issued.clone();
        move |link| serve_commands(link, &issued)
    });

    // Every one-byte change that still parses is refused by the owner:
    // corrupted keys, other ranges, other tokens.
    let bytes = genuine.to_bytes();
    let mut asked = 0;
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut mutated = bytes.clone();
            mutated[at] ^= flip;
            if let Ok(descriptor) = Descriptor::from_bytes(&mutated) {
                asked += 1;
                assert!(
                    refused(&link.verify(&descriptor, WAIT)),
                    "byte {at} ^ {flip:#x}"
                );
            }
        }
    }
    assert!(asked > bytes.len(), "{asked} mutations parsed");
    // Another allocation's range (the guard after it), or 8 bytes past the
    // end, under the genuine token and key.
    for (address, size) in [
        (guard.address(), guard.size()),
        (genuine.address() + 8, 4096),
    ] {
        let mut forged = bytes.clone();
        forged[8..16].copy_from_slice(&address.to_le_bytes());
        forged[16..24].copy_from_slice(&(size as u64).to_le_bytes());
        let forged = Descriptor::from_bytes(&forged).unwrap();
        assert!(refused(&link.verify(&forged, WAIT)));
    }
    assert_eq!(held(&mut link), [0, 0], "refusals hold nothing");

    // The genuine bytes: confirmed, held once per link however often.
    let grant = link.verify(&genuine, WAIT).unwrap();
    assert_eq!((grant.address(), grant.size()), (0x7f00_0010_0000, 4096));
    let twice = link.verify(&genuine, WAIT).unwrap();
    assert_eq!(held(&mut link), [1, 1]);

    // A remote made from it begins an operation, and the grants go: still
    // held, since nothing flushed it.
    grant.held().hold().unwrap();
    let track = Track::new(grant.held().clone());
    assert!(track.begin(true).unwrap());
    drop((grant, twice));
    assert_eq!(held(&mut link), [1, 1]);

    // The owner revokes: the peer's link reads it while waiting for the
    // answer, refuses new operations, and cannot let go before a flush,
    // so the owner's wait times out; the hold stays.
    link.send(b"revoke").unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"timed out");
    assert!(matches!(
        track.begin(true),
        Err(Error::Ucx(UcxError::Revoked))
    ));
    assert!(matches!(
        link.verify(&genuine, WAIT),
        Err(Error::Ucx(UcxError::Revoked))
    ));
    assert_eq!(held(&mut link), [1, 1]);
    // The flush: let go (RELEASED goes out before the next question).
    track.settle();
    drop(track);
    assert_eq!(held(&mut link), [0, 0]);
    link.send(b"revoke").unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"ok", "nothing left to revoke");

    // Held again, and let go by dropping the grant.
    let grant = link.verify(&genuine, WAIT).unwrap();
    assert_eq!(held(&mut link), [1, 1]);
    drop(grant);
    assert_eq!(held(&mut link), [0, 0]);

    // Withdrawn: refused. A grant held when the link goes stays held.
    assert!(issued.withdraw(&genuine));
    assert!(!issued.withdraw(&genuine));
    assert!(refused(&link.verify(&genuine, WAIT)));
    let kept = link.verify(&guard, WAIT).unwrap();
    drop(link);
    assert_eq!(owner.join().unwrap(), (1, 1));
    drop(kept);
    assert_eq!(issued.close(), 1, "the closed table still counts the hold");
}

#[test]
fn a_closed_table_confirms_nothing() {
    let issued = Issued::new(1);
    let descriptor = issued.issue(0x10_0000, 64, || Ok(fake_key())).unwrap();
    let (mut link, owner) = link_pair({
        let issued = issued.clone();
        move |link| serve_commands(link, &issued)
    });
    assert_eq!(issued.close_if_unheld(), Ok(()));
    let verified = link.verify(&descriptor, WAIT);
    assert!(refused(&verified), "{verified:?}");
    link.send(b"bye").unwrap();
    assert_eq!(owner.join().unwrap(), (0, 0));
}

/// The owner's side of `a_revoked_remote_refuses_and_a_registration_held_keeps_its_memory`.
fn owner_of_two(context: Context, mut link: Link) -> std::vec::Vec<u8> {
    let worker = context.worker().unwrap();
    let first = Registered::new(&context, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let second = Registered::new(&context, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let a = first.take(64 << 10, 64).unwrap();
    let b = second.take(64 << 10, 64).unwrap();
    link.send_address(&worker).unwrap();
    link.send(&worker.address().unwrap()).unwrap();
    for (registered, at) in [(&first, a), (&second, b)] {
        let descriptor = registered.descriptor_range(at, 64 << 10).unwrap();
        link.send(&descriptor.to_bytes()).unwrap();
    }
    assert_eq!(link.recv_serving(&worker, WAIT).unwrap(), b"revoke first");
    assert_eq!((first.held(), second.held()), (1, 1));
    link.revoke_in(&first, &worker, WAIT).unwrap();
    assert_eq!((first.held(), second.held()), (0, 1));
    // Unheld: unmapped and given back.
    let tape = first.into_inner().unwrap();
    drop(tape);
    link.send(b"revoked").unwrap();

    // The peer holds the second one again; dropping it keeps its memory.
    assert_eq!(link.recv_serving(&worker, WAIT).unwrap(), b"drop second");
    assert_eq!(second.held(), 1);
    let second = second.into_inner().unwrap_err();
    drop(second);
    link.send(b"dropped").unwrap();
    // The peer puts into it now: the bytes land in the kept memory.
    assert_eq!(link.recv_serving(&worker, WAIT).unwrap(), b"put");
    // SAFETY: the registration was leaked with its Tape, so these 64 KiB
    // stay mapped; the peer flushed before saying "put".
    unsafe { core::slice::from_raw_parts(b, 64 << 10) }.to_vec()
}

#[test]
fn a_revoked_remote_refuses_and_a_registration_held_keeps_its_memory() {
    let Some(context) =
        context("a_revoked_remote_refuses_and_a_registration_held_keeps_its_memory")
    else {
        return;
    };
    let (mut link, owner) = link_pair({
        let context = context.clone();
        move |link| owner_of_two(context, link)
    });
    let worker = context.worker().unwrap();
    let endpoint = worker.connect(&mut link, WAIT).unwrap();
    let address = link.recv(WAIT).unwrap();
    let first = Descriptor::from_bytes(&link.recv(WAIT).unwrap()).unwrap();
    let second = Descriptor::from_bytes(&link.recv(WAIT).unwrap()).unwrap();
    let first = link.verify(&first, WAIT).unwrap();
    let kept = link.verify(&second, WAIT).unwrap();
    let remote = endpoint.remote(&first).unwrap();
    remote.put(0, &[1; 4096]).unwrap();
    endpoint.flush().unwrap();

    // A grant is for endpoints connected through its link.
    // SAFETY: the address of a worker of this process, made by UCX.
    let other = unsafe { worker.connect_unchecked(&address, None) }.unwrap();
    assert!(matches!(
        other.remote(&first),
        Err(Error::Ucx(UcxError::OtherPeer))
    ));
    drop(other);

    // Flushed and idle: let go as soon as the link reads the revocation.
    link.send(b"revoke first").unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"revoked");
    assert!(remote.is_revoked() && first.is_revoked());
    assert!(matches!(
        remote.put(0, &[2; 8]),
        Err(Error::Ucx(UcxError::Revoked))
    ));
    assert!(matches!(
        remote.get(0, &mut [0; 8]),
        Err(Error::Ucx(UcxError::Revoked))
    ));
    assert!(matches!(
        endpoint.remote(&first),
        Err(Error::Ucx(UcxError::Revoked))
    ));
    drop(remote);

    // The second registration is dropped while held: a put afterwards
    // lands in the memory it kept.
    let remote = endpoint.remote(&kept).unwrap();
    link.send(b"drop second").unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"dropped");
    let data = pattern(64 << 10, 3);
    remote.put(0, &data).unwrap();
    endpoint.flush().unwrap();
    link.send(b"put").unwrap();
    assert!(
        owner.join().unwrap() == data,
        "the put landed in the kept memory"
    );
    drop(remote);
    drop(endpoint);
}

#[test]
fn frames_that_arrive_with_the_greeting_are_not_left_waiting() {
    // A raw owner that sends its greeting and a frame in one write, then
    // only waits: the frame must be read from what came with the greeting.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let owner = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = b"unimemL2".to_vec();
        bytes.extend_from_slice(&6u32.to_le_bytes());
        bytes.push(0);
        bytes.extend_from_slice(b"hello");
        stream.write_all(&bytes).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(link.recv(Duration::from_secs(2)).unwrap(), b"hello");
    drop(link);
    owner.join().unwrap();
}

#[test]
fn accept_if_turns_away_the_peers_it_does_not_allow() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A stranger connects first and is turned away; the peer after it is
    // greeted.
    let stranger = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let stranger_port = stranger.local_addr().unwrap().port();
    let peer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
        link.send(b"let in").unwrap();
    });
    let mut seen = std::vec::Vec::new();
    let mut link = Link::accept_if(&listener, WAIT, |from| {
        seen.push(from.port());
        from.port() != stranger_port
    })
    .unwrap();
    assert_eq!(link.recv(WAIT).unwrap(), b"let in");
    assert_eq!(seen[0], stranger_port);
    use std::io::Read;
    let mut byte = [0; 1];
    assert_eq!((&stranger).read(&mut byte).unwrap(), 0, "closed at once");
    peer.join().unwrap();
}

#[test]
fn malformed_control_frames_break_the_link() {
    // A raw owner that greets, then sends one bad frame: a token list that is
    // not whole tokens, a short confirmation, an address frame with no
    // address, a kind no link sends.
    for (kind, body) in [
        (5u8, vec![0u8; 15]),
        (3, vec![0; 7]),
        (1, vec![0; 8]),
        (9, vec![]),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let owner = thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.accept().unwrap();
            let mut bytes = b"unimemL2".to_vec();
            bytes.extend_from_slice(&(1 + body.len() as u32).to_le_bytes());
            bytes.push(kind);
            bytes.extend_from_slice(&body);
            stream.write_all(&bytes).unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let mut link = Link::connect(("127.0.0.1", port), WAIT).unwrap();
        for _ in 0..2 {
            // The second call fails at once: the link stays out of step.
            match link.recv(WAIT) {
                Err(Error::Ucx(UcxError::Bootstrap { source, .. })) => {
                    assert_eq!(
                        source.kind(),
                        std::io::ErrorKind::InvalidData,
                        "kind {kind}"
                    );
                }
                other => panic!("kind {kind}: {other:?}"),
            }
        }
        drop(link);
        owner.join().unwrap();
    }
}
