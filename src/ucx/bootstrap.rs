//! [`Link`]: a small framed TCP connection for what two processes exchange
//! before and around UCX: worker addresses, descriptors, "done" messages.

use core::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::Worker;
use super::error::UcxError;
use crate::Error;

/// What each side sends first: the link's name and version.
const HELLO: [u8; 8] = *b"unimemL1";

/// The longest frame a link takes (1 MiB): a longer length is refused
/// before anything is allocated for it.
pub const MAX_FRAME: usize = 1 << 20;

/// How long `send` may block on a peer that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a wait without a worker to progress sleeps between reads.
const POLL: Duration = Duration::from_micros(200);

fn failed(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| UcxError::Bootstrap { what, source }.into()
}

fn invalid(what: &'static str) -> Error {
    UcxError::Bootstrap {
        what,
        source: io::Error::from(ErrorKind::InvalidData),
    }
    .into()
}

fn timed_out(what: &'static str) -> Error {
    UcxError::Bootstrap {
        what,
        source: io::Error::from(ErrorKind::TimedOut),
    }
    .into()
}

/// A framed TCP connection between an owner and a peer: the bootstrap that
/// UCX leaves to the application.
///
/// The owner binds a [`TcpListener`] (any `std::net` address: loopback,
/// or an interface the peer reaches) and [`accept`](Link::accept)s; the
/// peer [`connect`](Link::connect)s. Both first send eight bytes naming
/// the protocol and check the other's, then exchange frames: a
/// little-endian `u32` length and that many bytes, at most [`MAX_FRAME`].
/// What goes in them is the application's: typically the owner sends its
/// [`Worker::address`] and the [`Descriptor`](super::Descriptor)s of what
/// it shares, the peer connects, puts and gets, flushes, and sends a frame
/// saying it is done.
///
/// Frames are read as untrusted input (lengths bounded, timeouts on every
/// wait), but the link is plain TCP: neither encrypted nor authenticated.
/// A link whose wait timed out mid-frame is out of step; drop it.
///
/// While it waits, the owner must keep its worker progressing, or the
/// peer's puts and gets never complete: [`recv_serving`](Link::recv_serving)
/// does both.
pub struct Link {
    stream: TcpStream,
}

impl Link {
    /// Waits up to `timeout` for a peer on `listener`, and greets it. The
    /// listener is left in blocking mode.
    pub fn accept(listener: &TcpListener, timeout: Duration) -> Result<Link, Error> {
        let deadline = Instant::now() + timeout;
        listener
            .set_nonblocking(true)
            .map_err(failed("set the listener non-blocking"))?;
        let accepted = loop {
            match listener.accept() {
                Ok((stream, _)) => break Ok(stream),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Err(timed_out("no peer connected in time"));
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
                return Err(timed_out("could not connect in time"));
            }
            match TcpStream::connect_timeout(&address, left) {
                Ok(stream) => return Link::greet(stream, deadline),
                Err(error) => last = error,
            }
        }
        Err(failed("connect")(last))
    }

    /// Sends and checks the greeting.
    fn greet(stream: TcpStream, deadline: Instant) -> Result<Link, Error> {
        stream
            .set_nodelay(true)
            .map_err(failed("set TCP_NODELAY"))?;
        let mut link = Link { stream };
        link.write(&HELLO)?;
        let mut hello = [0; HELLO.len()];
        link.fill(&mut hello, None, deadline)?;
        if hello != HELLO {
            return Err(invalid("the peer does not speak this link"));
        }
        Ok(link)
    }

    /// Sends one frame.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > MAX_FRAME {
            return Err(invalid("a frame longer than MAX_FRAME"));
        }
        let mut frame = Vec::with_capacity(4 + bytes.len());
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        frame.extend_from_slice(bytes);
        self.write(&frame)
    }

    /// Waits up to `timeout` for one frame.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.recv_inner(None, timeout)
    }

    /// Waits up to `timeout` for one frame, progressing `worker` meanwhile:
    /// how an owner serves its peers' puts and gets while it waits for them
    /// to say they are done.
    pub fn recv_serving(&mut self, worker: &Worker, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.recv_inner(Some(worker), timeout)
    }

    /// The TCP stream (for its addresses, or to shut it down).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn recv_inner(&mut self, worker: Option<&Worker>, timeout: Duration) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + timeout;
        let mut len = [0; 4];
        self.fill(&mut len, worker, deadline)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(invalid("the peer sent a frame longer than MAX_FRAME"));
        }
        let mut frame = vec![0; len];
        self.fill(&mut frame, worker, deadline)?;
        Ok(frame)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream
            .set_nonblocking(false)
            .map_err(failed("set the link blocking"))?;
        self.stream
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(failed("set the send timeout"))?;
        self.stream.write_all(bytes).map_err(failed("send"))
    }

    /// Reads exactly `buf.len()` bytes by `deadline`, progressing `worker`
    /// (or sleeping a little) while none are there.
    fn fill(
        &mut self,
        buf: &mut [u8],
        worker: Option<&Worker>,
        deadline: Instant,
    ) -> Result<(), Error> {
        self.stream
            .set_nonblocking(true)
            .map_err(failed("set the link non-blocking"))?;
        let mut got = 0;
        let mut idle = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(failed("the peer closed the link")(io::Error::from(
                        ErrorKind::UnexpectedEof,
                    )));
                }
                Ok(n) => got += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(timed_out("no frame from the peer in time"));
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
                Err(error) => return Err(failed("receive")(error)),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("local", &self.stream.local_addr().ok())
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}
