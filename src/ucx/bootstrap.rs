//! [`Link`]: a small framed TCP connection for what two processes exchange
//! before and around UCX: the owner's worker address, the confirmation and
//! revocation of descriptors, and the application's own messages.

use core::fmt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::descriptor::{Descriptor, HEADER, MAX_KEY};
use super::endpoint::MAX_ADDRESS;
use super::error::UcxError;
use super::grant::{self, Grant, Held, Issued, Peer, Refusal};
use super::{Registered, Worker};
use crate::Error;
use crate::register::Regions;

/// What each side sends first: the link's name and version.
const HELLO: [u8; 8] = *b"unimemL2";

/// The longest frame a link takes (1 MiB): a longer length is refused
/// before anything is allocated for it.
pub const MAX_FRAME: usize = 1 << 20;

/// How long a send may block on a peer that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a wait without a worker to progress sleeps between reads.
const POLL: Duration = Duration::from_micros(200);

/// The kinds of frame: the first byte after a frame's length.
mod kind {
    /// The application's bytes ([`Link::send`](super::Link::send)).
    pub const DATA: u8 = 0;
    /// Owner to peer: a context id (8 bytes) and a worker address.
    pub const ADDRESS: u8 = 1;
    /// Peer to owner: a request number (8) and descriptor bytes to confirm.
    pub const VERIFY: u8 = 2;
    /// Owner to peer: a request number (8) and the key's context id (8).
    pub const CONFIRMED: u8 = 3;
    /// Owner to peer: a request number (8) and a refusal code (1).
    pub const REFUSED: u8 = 4;
    /// Owner to peer: tokens (16 bytes each) it revokes.
    pub const REVOKE: u8 = 5;
    /// Peer to owner: tokens (16 bytes each) it let go of.
    pub const RELEASED: u8 = 6;
}

/// How many tokens one REVOKE or RELEASED frame carries at most.
const TAGS_PER_FRAME: usize = MAX_FRAME / 16;

fn failed(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| UcxError::Bootstrap { what, source }.into()
}

fn bootstrap(what: &'static str, kind: ErrorKind) -> Error {
    UcxError::Bootstrap {
        what,
        source: io::Error::from(kind),
    }
    .into()
}

/// The writing side of a link: the link and the holds made on it (which
/// say RELEASED when they let go, from whichever thread drops them) write
/// whole frames under its lock.
pub(crate) struct Writer {
    state: Mutex<WriterState>,
}

pub(crate) struct WriterState {
    stream: TcpStream,
    /// A send failed or timed out part way: the stream is out of step.
    broken: bool,
}

impl Writer {
    pub(crate) fn lock(&self) -> MutexGuard<'_, WriterState> {
        grant::lock(&self.state)
    }
}

impl WriterState {
    /// Writes one frame of `kind` whose body is `parts`, one after another.
    pub(crate) fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), Error> {
        let body: usize = parts.iter().map(|part| part.len()).sum();
        debug_assert!(body <= MAX_FRAME + 8);
        let mut frame = Vec::with_capacity(5 + body);
        frame.extend_from_slice(&(1 + body as u32).to_le_bytes());
        frame.push(kind);
        for part in parts {
            frame.extend_from_slice(part);
        }
        self.write_all(&frame)
    }

    /// Says RELEASED for `tokens`.
    pub(crate) fn released(&mut self, tokens: &[u128]) -> Result<(), Error> {
        self.tokens(kind::RELEASED, tokens)
    }

    fn tokens(&mut self, kind: u8, tokens: &[u128]) -> Result<(), Error> {
        for tokens in tokens.chunks(TAGS_PER_FRAME) {
            let body: Vec<u8> = tokens
                .iter()
                .flat_map(|token| token.to_le_bytes())
                .collect();
            self.frame(kind, &[&body])?;
        }
        Ok(())
    }

    /// Writes all of `bytes` on the non-blocking stream within
    /// `SEND_TIMEOUT`.
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        if self.broken {
            return Err(bootstrap(
                "an earlier send failed part way; the link is out of step",
                ErrorKind::BrokenPipe,
            ));
        }
        let deadline = Instant::now() + SEND_TIMEOUT;
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => {
                    self.broken = true;
                    return Err(failed("send")(io::Error::from(ErrorKind::WriteZero)));
                }
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        self.broken = true;
                        return Err(bootstrap(
                            "the peer did not read what was sent in time",
                            ErrorKind::TimedOut,
                        ));
                    }
                    std::thread::sleep(POLL);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    self.broken = true;
                    return Err(failed("send")(error));
                }
            }
        }
        Ok(())
    }
}

/// A framed TCP connection between an owner and a peer: the bootstrap that
/// UCX leaves to the application, and the channel through which an owner
/// confirms and revokes what it shares.
///
/// The owner binds a [`TcpListener`] (any `std::net` address: loopback,
/// or an interface the peer reaches) and [`accept`](Link::accept)s (or
/// [`accept_if`](Link::accept_if), refusing addresses it does not know);
/// the peer [`connect`](Link::connect)s. Both first send eight bytes naming
/// the protocol and check the other's, then exchange frames: a
/// little-endian `u32` length, a kind byte, and the body, at most
/// [`MAX_FRAME`] bytes of the application's.
///
/// The sharing goes through it:
///
/// 1. The owner sends its worker's address ([`send_address`](Link::send_address));
///    the peer connects to it ([`Worker::connect`]).
/// 2. The owner sends descriptors of what it shares, in its own messages
///    ([`send`](Link::send)) or any other way; the peer has the owner
///    confirm each ([`verify`](Link::verify)), which gives a [`Grant`] that
///    the endpoint unpacks ([`Endpoint::remote`](super::Endpoint::remote)).
/// 3. Before the owner frees what it shared or drops the registration, it
///    revokes what the peer holds ([`revoke`](Link::revoke), or
///    [`revoke_in`](Link::revoke_in) one registration,
///    [`revoke_descriptor`](Link::revoke_descriptor) one allocation), which
///    returns once the peer has flushed and let go.
///
/// Every wait on a link ([`recv`](Link::recv), [`recv_serving`](Link::recv_serving),
/// [`verify`](Link::verify), [`revoke`](Link::revoke), [`Worker::connect`])
/// answers the other side's confirmations and revocations meanwhile, and
/// keeps the application's messages that arrive for the next `recv`; an
/// owner must be in one of them for its peers' verifications to be
/// answered.
///
/// Frames are read as untrusted input (lengths bounded, every frame
/// checked, timeouts on every wait; a wait that times out mid-frame keeps
/// what it read), but the link is plain TCP: neither encrypted nor
/// authenticated. What it trusts is the process at its other end, as far
/// as a UCX context trusts its peers ([`Peers`](super::Peers)): a worker
/// address from it goes to UCX, and a descriptor it confirms is unpacked.
/// On a network where others can forge TCP traffic, so can they UCX's own.
///
/// While it waits, the owner must keep its worker progressing, or the
/// peer's puts and gets never complete: [`recv_serving`](Link::recv_serving)
/// and [`revoke`](Link::revoke) do.
pub struct Link {
    /// A random number naming this link: endpoints connected through it and
    /// grants confirmed over it carry it.
    id: u64,
    stream: TcpStream,
    writer: Arc<Writer>,
    /// Bytes read and not yet a whole frame.
    buffer: Vec<u8>,
    /// The application's frames read while waiting for something else.
    inbox: VecDeque<Vec<u8>>,
    /// Why the link is out of step, once it is.
    broken: Option<(&'static str, ErrorKind)>,
    /// The peer's worker address and its context's id, once it sent them.
    address: Option<(u64, Vec<u8>)>,
    /// Owner side: the tokens the peer holds, with their registrations.
    held: HashMap<u128, Arc<Issued>>,
    /// Owner side: tokens whose revocation is waiting; they are not
    /// confirmed meanwhile.
    revoking: HashSet<u128>,
    /// Peer side: the holds confirmed over this link.
    grants: HashMap<u128, Arc<Held>>,
    /// Peer side: the last verification's number, and its answer.
    request: u64,
    reply: Option<(u64, Result<u64, Refusal>)>,
}

impl Link {
    /// Waits up to `timeout` for a peer on `listener`, and greets it. The
    /// listener is left in blocking mode.
    pub fn accept(listener: &TcpListener, timeout: Duration) -> Result<Link, Error> {
        Link::accept_if(listener, timeout, |_| true)
    }

    /// As [`accept`](Link::accept), taking only a peer whose address
    /// `allow` accepts: others are disconnected at once, and the wait goes
    /// on. (This bounds who gets the owner's worker address and
    /// descriptors through unimem; it does not bound who reaches the
    /// worker's own transports: see [`Peers`](super::Peers).)
    pub fn accept_if(
        listener: &TcpListener,
        timeout: Duration,
        mut allow: impl FnMut(SocketAddr) -> bool,
    ) -> Result<Link, Error> {
        let deadline = Instant::now() + timeout;
        listener
            .set_nonblocking(true)
            .map_err(failed("set the listener non-blocking"))?;
        let accepted = loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if allow(from) {
                        break Ok(stream);
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Err(bootstrap("no peer connected in time", ErrorKind::TimedOut));
                    }
                    std::thread::sleep(POLL);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => break Err(failed("accept")(error)),
            }
        };
        let restored = listener.set_nonblocking(false);
        let stream = accepted?;
        restored.map_err(failed("set the listener blocking again"))?;
        Link::greet(stream, deadline)
    }

    /// Connects to an owner listening at `address` within `timeout`, and
    /// greets it.
    pub fn connect(address: impl ToSocketAddrs, timeout: Duration) -> Result<Link, Error> {
        let deadline = Instant::now() + timeout;
        let addresses: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(failed("resolve the address"))?
            .collect();
        let mut last = io::Error::from(ErrorKind::AddrNotAvailable);
        for address in addresses {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(bootstrap("could not connect in time", ErrorKind::TimedOut));
            }
            match TcpStream::connect_timeout(&address, left) {
                Ok(stream) => return Link::greet(stream, deadline),
                Err(error) => last = error,
            }
        }
        Err(failed("connect")(last))
    }

    /// Sends and checks the greeting; the stream stays non-blocking.
    fn greet(stream: TcpStream, deadline: Instant) -> Result<Link, Error> {
        stream
            .set_nodelay(true)
            .map_err(failed("set TCP_NODELAY"))?;
        stream
            .set_nonblocking(true)
            .map_err(failed("set the link non-blocking"))?;
        let writer = stream
            .try_clone()
            .map_err(failed("clone the stream for writing"))?;
        let mut link = Link {
            id: u64::from_ne_bytes(grant::random()?),
            stream,
            writer: Arc::new(Writer {
                state: Mutex::new(WriterState {
                    stream: writer,
                    broken: false,
                }),
            }),
            buffer: Vec::new(),
            inbox: VecDeque::new(),
            broken: None,
            address: None,
            held: HashMap::new(),
            revoking: HashSet::new(),
            grants: HashMap::new(),
            request: 0,
            reply: None,
        };
        link.writer.lock().write_all(&HELLO)?;
        while link.buffer.len() < HELLO.len() {
            link.read_some(None, deadline, "no greeting from the peer in time")?;
        }
        if link.buffer[..HELLO.len()] != HELLO {
            return Err(bootstrap(
                "the peer does not speak this link",
                ErrorKind::InvalidData,
            ));
        }
        link.buffer.drain(..HELLO.len());
        Ok(link)
    }

    /// Sends one frame of the application's.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > MAX_FRAME {
            return Err(bootstrap(
                "a frame longer than MAX_FRAME",
                ErrorKind::InvalidData,
            ));
        }
        self.writer.lock().frame(kind::DATA, &[bytes])
    }

    /// Waits up to `timeout` for one frame of the application's.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.pump(
            None,
            Instant::now() + timeout,
            "no frame from the peer in time",
            |link| link.inbox.pop_front(),
        )
    }

    /// Waits up to `timeout` for one frame of the application's,
    /// progressing `worker` meanwhile: how an owner serves its peers' puts
    /// and gets while it waits for them to say they are done.
    pub fn recv_serving(&mut self, worker: &Worker, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.pump(
            Some(worker),
            Instant::now() + timeout,
            "no frame from the peer in time",
            |link| link.inbox.pop_front(),
        )
    }

    /// Sends `worker`'s address, for the peer to connect to
    /// ([`Worker::connect`]).
    pub fn send_address(&mut self, worker: &Worker) -> Result<(), Error> {
        let address = worker.address()?;
        let context = worker.context().id().to_le_bytes();
        self.writer
            .lock()
            .frame(kind::ADDRESS, &[&context, &address])
    }

    /// Has the owner at the other end confirm `descriptor`, within
    /// `timeout`: it does if it issued exactly these bytes from a
    /// registration that still lives and is not revoking what this link
    /// holds, and from then on counts this link as holding the descriptor
    /// until the [`Grant`] and the remotes made from it are dropped and
    /// flushed, or it revokes them.
    ///
    /// Errors: [`UcxError::Refused`] with the owner's reason (forged or
    /// corrupted bytes, another process's descriptor, a withdrawn one, a
    /// registration that is gone), [`UcxError::Revoked`] for a descriptor
    /// this link holds under a revocation not yet settled (flush first),
    /// and the link's errors. Nothing of the descriptor reaches UCX here.
    pub fn verify(&mut self, descriptor: &Descriptor, timeout: Duration) -> Result<Grant, Error> {
        let deadline = Instant::now() + timeout;
        self.usable()?;
        let token = descriptor.token();
        self.request += 1;
        let request = self.request;
        self.reply = None;
        self.grants.retain(|_, held| !held.is_released());
        let held = {
            // Under the writer's lock, as the holds' RELEASED frames are:
            // the owner reads VERIFY after a release of an earlier hold.
            let mut writer = self.writer.lock();
            let held = match self.grants.get(&token) {
                Some(held) if held.try_hold() => held.clone(),
                _ => {
                    let held = Held::new(token, self.writer.clone());
                    held.try_hold();
                    self.grants.insert(token, held.clone());
                    held
                }
            };
            let sent = writer.frame(
                kind::VERIFY,
                &[&request.to_le_bytes(), &descriptor.to_bytes()],
            );
            drop(writer);
            if let Err(error) = sent {
                held.let_go();
                return Err(error);
            }
            held
        };
        let answer = self.pump(
            None,
            deadline,
            "no answer from the owner in time",
            |link| match link.reply.take() {
                Some((number, answer)) if number == request => Some(answer),
                _ => None,
            },
        );
        match answer {
            Ok(Ok(_)) if held.is_revoked() => {
                held.let_go();
                Err(UcxError::Revoked.into())
            }
            Ok(Ok(context)) => {
                let peer = Peer {
                    link: self.id,
                    context,
                };
                Ok(Grant::new(descriptor.clone(), peer, held))
            }
            Ok(Err(refusal)) => {
                held.let_go();
                Err(refusal.into())
            }
            Err(error) => {
                held.let_go();
                Err(error)
            }
        }
    }

    /// Revokes every descriptor the peer holds through this link, and
    /// waits up to `timeout` (progressing `worker`, which must be the one
    /// the peer's puts and gets go to) until the peer has let go of them:
    /// it refuses new operations through them at once, and lets go once
    /// every operation it started through them has been flushed. After
    /// `Ok`, nothing the peer does through unimem touches them, and the
    /// owner may free them or drop their registration. Meanwhile the link
    /// refuses to confirm them again.
    ///
    /// Errors: the peer did not let go in time (it is not reading the link,
    /// or has operations it does not flush), or the link failed. The
    /// descriptors then stay held: a registration dropped while they are
    /// keeps its memory (see [`Registered`](super::Registered)).
    pub fn revoke(&mut self, worker: &Worker, timeout: Duration) -> Result<(), Error> {
        let tokens: Vec<u128> = self.held.keys().copied().collect();
        self.revoke_tags(tokens, Some(worker), timeout)
    }

    /// As [`revoke`](Link::revoke), for the descriptors of `registered`
    /// only: what to do before dropping it while the peer goes on using
    /// others.
    pub fn revoke_in<A: Regions>(
        &mut self,
        registered: &Registered<A>,
        worker: &Worker,
        timeout: Duration,
    ) -> Result<(), Error> {
        let tokens: Vec<u128> = self
            .held
            .iter()
            .filter(|(_, issued)| registered.issued_by(issued))
            .map(|(&token, _)| token)
            .collect();
        self.revoke_tags(tokens, Some(worker), timeout)
    }

    /// As [`revoke`](Link::revoke), for `descriptor` only: what to do
    /// before freeing the allocation it names.
    pub fn revoke_descriptor(
        &mut self,
        descriptor: &Descriptor,
        worker: &Worker,
        timeout: Duration,
    ) -> Result<(), Error> {
        let tokens: Vec<u128> = Some(descriptor.token())
            .filter(|token| self.held.contains_key(token))
            .into_iter()
            .collect();
        self.revoke_tags(tokens, Some(worker), timeout)
    }

    /// Revokes `tokens` (held by the peer) and waits until it let go of
    /// them, progressing `worker` if given.
    pub(crate) fn revoke_tags(
        &mut self,
        tokens: Vec<u128>,
        worker: Option<&Worker>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        if tokens.is_empty() {
            return Ok(());
        }
        self.usable()?;
        self.writer.lock().tokens(kind::REVOKE, &tokens)?;
        self.revoking.extend(tokens.iter().copied());
        let released = self.pump(
            worker,
            deadline,
            "the peer did not let go of what was revoked in time",
            |link| (!tokens.iter().any(|token| link.held.contains_key(token))).then_some(()),
        );
        for token in &tokens {
            self.revoking.remove(token);
        }
        released
    }

    /// How many descriptors the peer holds through this link (owner side):
    /// confirmed, and not yet let go of.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The TCP stream (for its addresses, or to shut it down).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The tokens the peer holds (owner side).
    #[cfg(test)]
    pub(crate) fn held_tags(&self) -> Vec<u128> {
        self.held.keys().copied().collect()
    }

    /// The link's random id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The peer's worker address and its context's id, waiting up to
    /// `timeout` for them.
    pub(crate) fn peer_address(&mut self, timeout: Duration) -> Result<(u64, Vec<u8>), Error> {
        self.pump(
            None,
            Instant::now() + timeout,
            "no worker address from the peer in time",
            |link| link.address.clone(),
        )
    }

    /// `Ok` unless the link is out of step.
    fn usable(&self) -> Result<(), Error> {
        match self.broken {
            None => Ok(()),
            Some((what, kind)) => Err(bootstrap(what, kind)),
        }
    }

    /// Marks the link out of step, and the error saying why.
    fn broke(&mut self, what: &'static str, kind: ErrorKind) -> Error {
        self.broken.get_or_insert((what, kind));
        bootstrap(what, kind)
    }

    /// Reads and handles frames until `ready` gives something, or fails
    /// with `waiting` at `deadline`. Progresses `worker` (or sleeps a
    /// little) while nothing arrives.
    fn pump<T>(
        &mut self,
        worker: Option<&Worker>,
        deadline: Instant,
        waiting: &'static str,
        mut ready: impl FnMut(&mut Link) -> Option<T>,
    ) -> Result<T, Error> {
        loop {
            // Whole frames may be buffered already (read with the greeting,
            // or with the end of an earlier frame).
            self.dispatch()?;
            if let Some(value) = ready(self) {
                return Ok(value);
            }
            self.usable()?;
            self.read_some(worker, deadline, waiting)?;
        }
    }

    /// Reads what the stream has, waiting for something until `deadline`.
    fn read_some(
        &mut self,
        worker: Option<&Worker>,
        deadline: Instant,
        waiting: &'static str,
    ) -> Result<(), Error> {
        let mut chunk = [0u8; 16 << 10];
        let mut idle = 0;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(self.broke("the peer closed the link", ErrorKind::UnexpectedEof));
                }
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(bootstrap(waiting, ErrorKind::TimedOut));
                    }
                    match worker {
                        Some(worker) => {
                            worker.usable()?;
                            worker.spin(&mut idle);
                        }
                        None => std::thread::sleep(POLL),
                    }
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    self.broken.get_or_insert(("receive failed", error.kind()));
                    return Err(failed("receive")(error));
                }
            }
        }
    }

    /// Handles every whole frame in the buffer.
    fn dispatch(&mut self) -> Result<(), Error> {
        let mut at = 0;
        let result = loop {
            let rest = &self.buffer[at..];
            let Some((len, rest)) = rest.split_first_chunk::<4>() else {
                break Ok(());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len == 0 || len > MAX_FRAME + 1 {
                break Err(self.broke(
                    "the peer sent a frame longer than MAX_FRAME, or an empty one",
                    ErrorKind::InvalidData,
                ));
            }
            if rest.len() < len {
                break Ok(());
            }
            let kind = rest[0];
            let body = rest[1..len].to_vec();
            at += 4 + len;
            if let Err(error) = self.handle(kind, body) {
                break Err(error);
            }
        };
        self.buffer.drain(..at);
        result
    }

    /// Handles one frame.
    fn handle(&mut self, kind: u8, body: Vec<u8>) -> Result<(), Error> {
        match kind {
            kind::DATA => self.inbox.push_back(body),
            kind::ADDRESS => {
                let Some((context, address)) = body.split_first_chunk::<8>() else {
                    return Err(self.broke("a short address frame", ErrorKind::InvalidData));
                };
                if address.is_empty() || address.len() > MAX_ADDRESS {
                    return Err(self.broke(
                        "a worker address that is empty or longer than 64 KiB",
                        ErrorKind::InvalidData,
                    ));
                }
                self.address = Some((u64::from_le_bytes(*context), address.to_vec()));
            }
            kind::VERIFY => {
                let Some((request, bytes)) = body.split_first_chunk::<8>() else {
                    return Err(self.broke("a short verify frame", ErrorKind::InvalidData));
                };
                self.answer(*request, bytes)?;
            }
            kind::CONFIRMED => {
                let Ok(body) = <[u8; 16]>::try_from(&body[..]) else {
                    return Err(self.broke("a bad confirmation frame", ErrorKind::InvalidData));
                };
                let request = u64::from_le_bytes(body[..8].try_into().unwrap());
                let context = u64::from_le_bytes(body[8..].try_into().unwrap());
                self.reply = Some((request, Ok(context)));
            }
            kind::REFUSED => {
                let Ok(body) = <[u8; 9]>::try_from(&body[..]) else {
                    return Err(self.broke("a bad refusal frame", ErrorKind::InvalidData));
                };
                let request = u64::from_le_bytes(body[..8].try_into().unwrap());
                self.reply = Some((request, Err(Refusal::from_code(body[8]))));
            }
            kind::REVOKE => {
                let tokens = self.tags_of(&body)?;
                let mut unknown = Vec::new();
                for token in tokens {
                    match self.grants.get(&token) {
                        Some(held) if !held.is_released() => held.revoke(),
                        // Nothing of it is held here (any more).
                        _ => unknown.push(token),
                    }
                }
                if !unknown.is_empty() {
                    self.writer.lock().released(&unknown)?;
                }
            }
            kind::RELEASED => {
                for token in self.tags_of(&body)? {
                    if let Some(issued) = self.held.remove(&token) {
                        issued.release();
                    }
                }
            }
            _ => {
                return Err(self.broke(
                    "a frame of a kind this link does not know",
                    ErrorKind::InvalidData,
                ));
            }
        }
        Ok(())
    }

    /// The tokens in a REVOKE or RELEASED frame.
    fn tags_of(&mut self, body: &[u8]) -> Result<Vec<u128>, Error> {
        if !body.len().is_multiple_of(16) {
            return Err(self.broke("a bad list of tokens", ErrorKind::InvalidData));
        }
        Ok(body
            .chunks_exact(16)
            .map(|token| u128::from_le_bytes(token.try_into().unwrap()))
            .collect())
    }

    /// Answers a peer's VERIFY: confirmed only for a descriptor a live
    /// registration of this process issued, byte for byte, whose
    /// revocation is not waiting.
    fn answer(&mut self, request: [u8; 8], bytes: &[u8]) -> Result<(), Error> {
        let answer = if bytes.len() > HEADER + MAX_KEY {
            Err(Refusal::Malformed)
        } else {
            match Descriptor::from_bytes(bytes) {
                Err(_) => Err(Refusal::Malformed),
                Ok(descriptor) if self.revoking.contains(&descriptor.token()) => {
                    Err(Refusal::Revoking)
                }
                Ok(descriptor) => {
                    let token = descriptor.token();
                    grant::confirm(&descriptor, self.held.contains_key(&token)).map(|issued| {
                        let context = issued.context();
                        self.held.entry(token).or_insert(issued);
                        context
                    })
                }
            }
        };
        let mut writer = self.writer.lock();
        match answer {
            Ok(context) => writer.frame(kind::CONFIRMED, &[&request, &context.to_le_bytes()]),
            Err(refusal) => writer.frame(kind::REFUSED, &[&request, &[refusal.code()]]),
        }
    }
}

impl Drop for Link {
    /// Shuts the connection down, so that the peer sees it closed even
    /// while grants made on it (which keep a handle to write through) live
    /// on.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("local", &self.stream.local_addr().ok())
            .field("peer", &self.stream.peer_addr().ok())
            .field("held", &self.held.len())
            .field("broken", &self.broken.map(|(what, _)| what))
            .finish()
    }
}
