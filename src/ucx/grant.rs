//! Grants: the descriptors an owner issued and which links hold them (the
//! owner's side, [`Issued`]), and the descriptors a peer's owner confirmed
//! ([`Grant`]) with what the peer still owes before it lets one go (the
//! peer's side, [`Held`] and [`Track`]).
//!
//! The protocol runs over a [`Link`](super::Link) (its frames are in
//! `bootstrap.rs`):
//!
//! - The owner issues a descriptor (`Registered::descriptor_of`): it gets a
//!   random 128-bit token and is kept, byte for byte, in its registration's
//!   [`Issued`].
//! - A peer asks the owner to confirm a descriptor (VERIFY). The owner
//!   confirms only one it issued, byte for byte, whose registration lives,
//!   while it is not revoking what the link holds; it then counts the link
//!   as holding the token (CONFIRMED, else REFUSED). The peer unpacks the key
//!   only then, and only on an endpoint connected to the worker address
//!   the same link carried.
//! - The owner revokes what a link holds (REVOKE). The peer refuses new
//!   operations through it, and once every operation it started through it
//!   has been flushed, it says it let go (RELEASED). A peer also lets go of
//!   a token on its own once it has dropped every [`Grant`] and
//!   [`Remote`](super::Remote) of it and flushed what they started.
//! - A registration whose descriptors a link still holds is never unmapped:
//!   dropped, it leaks its memory instead, so that a late put lands in
//!   pages that are still there.
//!
//! Frames that change what a peer holds (VERIFY, RELEASED) are written
//! under the link's writer lock together with the change, so the owner
//! reads them in the order the peer's holds changed.

use core::cell::Cell;
use core::fmt;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::bootstrap::Writer;
use super::descriptor::Descriptor;
use super::error::UcxError;
use crate::Error;

/// Random bytes from the kernel.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], Error> {
    crate::sys::random_bytes().map_err(|source| Error::Os {
        call: "getrandom",
        source,
    })
}

/// Locks `mutex`, whether or not a thread panicked holding it: what these
/// locks guard is counters and maps that each change leaves whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why an owner did not confirm a descriptor: one byte in a REFUSED frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No registration of the owner issued these bytes (or it withdrew them).
    NotIssued,
    /// The registration that issued them is gone.
    Gone,
    /// The owner is revoking what the link holds.
    Revoking,
    /// The bytes are not a descriptor.
    Malformed,
    /// A code this side does not know.
    Other,
}

impl Refusal {
    pub(crate) fn code(self) -> u8 {
        match self {
            Refusal::NotIssued => 1,
            Refusal::Gone => 2,
            Refusal::Revoking => 3,
            Refusal::Malformed => 4,
            Refusal::Other => 255,
        }
    }

    pub(crate) fn from_code(code: u8) -> Refusal {
        match code {
            1 => Refusal::NotIssued,
            2 => Refusal::Gone,
            3 => Refusal::Revoking,
            4 => Refusal::Malformed,
            _ => Refusal::Other,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NotIssued => {
                "it did not issue these bytes (forged, corrupted, from another process, or \
                 withdrawn)"
            }
            Refusal::Gone => "the registration that issued it is gone",
            Refusal::Revoking => "it is revoking what this link holds",
            Refusal::Malformed => "they are not a descriptor",
            Refusal::Other => "it refused it for a reason this side does not know",
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        UcxError::Refused {
            reason: refusal.reason(),
        }
        .into()
    }
}

/// One registration's issued descriptors, and how many links hold a token of
/// them. Shared by the registration, the process's list of them, and the
/// owner links that hold its tokens.
pub(crate) struct Issued {
    /// The id of the context the keys were packed with.
    context: u64,
    state: Mutex<IssuedState>,
}

#[derive(Default)]
struct IssuedState {
    /// Every descriptor issued and not withdrawn, by token.
    by_token: HashMap<u128, Descriptor>,
    /// The token issued for each range, so that a range keeps one descriptor.
    by_range: HashMap<(u64, usize), u128>,
    /// How many (link, token) holds peers have: confirmed, not released.
    held: usize,
    /// The registration is going: nothing is confirmed any more.
    closed: bool,
}

/// Every live registration's `Issued`, for the owner links to look
/// descriptors up in.
static ISSUERS: Mutex<Vec<Weak<Issued>>> = Mutex::new(Vec::new());

impl Issued {
    /// An empty table for a registration on the context with id `context`,
    /// listed for the links.
    pub(crate) fn new(context: u64) -> Arc<Issued> {
        let issued = Arc::new(Issued {
            context,
            state: Mutex::new(IssuedState::default()),
        });
        let mut issuers = lock(&ISSUERS);
        issuers.retain(|weak| weak.strong_count() > 0);
        issuers.push(Arc::downgrade(&issued));
        issued
    }

    /// The descriptor of `size` bytes at `address`: the one issued for that
    /// range before, or a new one with a fresh token and the key `pack` makes.
    pub(crate) fn issue(
        &self,
        address: u64,
        size: usize,
        pack: impl FnOnce() -> Result<Vec<u8>, Error>,
    ) -> Result<Descriptor, Error> {
        if let Some(descriptor) = self.by_range(address, size) {
            return Ok(descriptor);
        }
        let descriptor = Descriptor::new(address, size, new_token()?, pack()?)?;
        let mut state = lock(&self.state);
        // Another thread may have issued the range meanwhile: one token each.
        if let Some(token) = state.by_range.get(&(address, size)) {
            return Ok(state.by_token[token].clone());
        }
        state.by_range.insert((address, size), descriptor.token());
        state
            .by_token
            .insert(descriptor.token(), descriptor.clone());
        Ok(descriptor)
    }

    fn by_range(&self, address: u64, size: usize) -> Option<Descriptor> {
        let state = lock(&self.state);
        let token = state.by_range.get(&(address, size))?;
        Some(state.by_token[token].clone())
    }

    /// Stops confirming `descriptor`; whether it was issued here.
    pub(crate) fn withdraw(&self, descriptor: &Descriptor) -> bool {
        let mut state = lock(&self.state);
        if state.by_token.get(&descriptor.token()) != Some(descriptor) {
            return false;
        }
        state.by_token.remove(&descriptor.token());
        state
            .by_range
            .remove(&(descriptor.address(), descriptor.size()));
        true
    }

    /// How many (link, token) holds peers have.
    pub(crate) fn held(&self) -> usize {
        lock(&self.state).held
    }

    /// How many descriptors are issued and not withdrawn.
    pub(crate) fn issued(&self) -> usize {
        lock(&self.state).by_token.len()
    }

    /// The id of the context the keys were packed with.
    pub(crate) fn context(&self) -> u64 {
        self.context
    }

    /// Confirms nothing from now on; the holds peers still have. Atomic
    /// with `confirm`: a hold confirmed before is counted, none after.
    pub(crate) fn close(self: &Arc<Self>) -> usize {
        let held = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.held
        };
        self.unlist();
        held
    }

    /// As `close`, but only if no peer holds anything: `Err` with the holds
    /// otherwise, and the table stays open.
    pub(crate) fn close_if_unheld(self: &Arc<Self>) -> Result<(), usize> {
        {
            let mut state = lock(&self.state);
            if state.held > 0 {
                return Err(state.held);
            }
            state.closed = true;
        }
        self.unlist();
        Ok(())
    }

    fn unlist(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        lock(&ISSUERS).retain(|weak| weak.strong_count() > 0 && !weak.ptr_eq(&this));
    }

    /// A link let go of a token it held.
    pub(crate) fn release(&self) {
        let mut state = lock(&self.state);
        state.held = state.held.saturating_sub(1);
    }
}

/// A fresh, non-zero token.
fn new_token() -> Result<u128, Error> {
    loop {
        let token = u128::from_ne_bytes(random()?);
        if token != 0 {
            return Ok(token);
        }
    }
}

/// Confirms `descriptor` for a link: the registration that issued exactly
/// these bytes, if it is open, with the link counted as a holder of its token
/// unless it was one already (`already`).
pub(crate) fn confirm(descriptor: &Descriptor, already: bool) -> Result<Arc<Issued>, Refusal> {
    let issuers: Vec<Arc<Issued>> = lock(&ISSUERS).iter().filter_map(Weak::upgrade).collect();
    for issued in issuers {
        let mut state = lock(&issued.state);
        if state.by_token.get(&descriptor.token()) != Some(descriptor) {
            continue;
        }
        if state.closed {
            return Err(Refusal::Gone);
        }
        if !already {
            state.held += 1;
        }
        drop(state);
        return Ok(issued);
    }
    Err(Refusal::NotIssued)
}

/// Which link an endpoint was connected through and which context its
/// worker address came from; a [`Grant`] names the same pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The link's random id.
    pub(crate) link: u64,
    /// The id of the owner's context (`Context::id`).
    pub(crate) context: u64,
}

/// A peer's hold on one token confirmed over one link, shared by the link,
/// the [`Grant`]s and the [`Track`]s of it.
pub(crate) struct Held {
    token: u128,
    /// The link's frame writer: RELEASED goes out through it.
    writer: Arc<Writer>,
    state: Mutex<HeldState>,
}

#[derive(Default)]
struct HeldState {
    /// Grants, Tracks and verifications in flight that hold the token.
    holders: usize,
    /// Tracks (remotes) with operations started and not yet flushed.
    unsettled: usize,
    /// The owner revoked it: no operation starts any more.
    revoked: bool,
    /// RELEASED was said: this hold is over (a new one is a new `Held`).
    released: bool,
}

impl Held {
    /// A hold of `token` on the link whose writer this is, with no holder
    /// yet.
    pub(crate) fn new(token: u128, writer: Arc<Writer>) -> Arc<Held> {
        Arc::new(Held {
            token,
            writer,
            state: Mutex::new(HeldState::default()),
        })
    }

    /// Adds a holder for a verification about to be sent, unless the hold
    /// was released (then the caller makes a new one). Called with the
    /// writer's lock held, which orders it with RELEASED.
    pub(crate) fn try_hold(&self) -> bool {
        let mut state = lock(&self.state);
        if state.released {
            return false;
        }
        state.holders += 1;
        true
    }

    /// Adds a holder for a remote: refused once revoked.
    pub(crate) fn hold(&self) -> Result<(), Error> {
        let mut state = lock(&self.state);
        if state.revoked {
            return Err(UcxError::Revoked.into());
        }
        state.holders += 1;
        Ok(())
    }

    /// Before an operation: refused once revoked; `first` (the first since
    /// the remote's last flush) counts the remote as unsettled.
    fn begin(&self, first: bool) -> Result<(), Error> {
        let mut state = lock(&self.state);
        if state.revoked {
            return Err(UcxError::Revoked.into());
        }
        if first {
            state.unsettled += 1;
        }
        Ok(())
    }

    /// A holder is gone.
    pub(crate) fn let_go(&self) {
        self.change(|state| state.holders = state.holders.saturating_sub(1));
    }

    /// A remote's operations were all flushed.
    fn settle(&self) {
        self.change(|state| state.unsettled = state.unsettled.saturating_sub(1));
    }

    /// The owner revoked the token.
    pub(crate) fn revoke(&self) {
        self.change(|state| state.revoked = true);
    }

    pub(crate) fn is_revoked(&self) -> bool {
        lock(&self.state).revoked
    }

    pub(crate) fn is_released(&self) -> bool {
        lock(&self.state).released
    }

    /// Applies `f`, and says RELEASED if that let the token go: nothing
    /// unflushed, and no holder left or revoked. Under the writer's lock,
    /// so that RELEASED and a new hold's VERIFY go out in the order the
    /// holds changed.
    fn change(&self, f: impl FnOnce(&mut HeldState)) {
        let mut writer = self.writer.lock();
        let release = {
            let mut state = lock(&self.state);
            f(&mut state);
            let release =
                !state.released && state.unsettled == 0 && (state.holders == 0 || state.revoked);
            state.released |= release;
            release
        };
        if release {
            // A failed write leaves the owner believing the token held: it
            // then keeps the memory, which is safe.
            let _ = writer.released(&[self.token]);
        }
    }
}

/// One remote's part in a hold: whether it has operations that no flush
/// has completed yet. The remote and, while it is unsettled, its endpoint
/// keep it; the last of them to go lets go of the hold.
pub(crate) struct Track {
    held: Arc<Held>,
    unsettled: Cell<bool>,
}

impl Track {
    /// The track of a remote that took a hold of `held` (`Held::hold`).
    pub(crate) fn new(held: Arc<Held>) -> Rc<Track> {
        Rc::new(Track {
            held,
            unsettled: Cell::new(false),
        })
    }

    /// Before an operation (`moves`: one that sends anything): refused once
    /// revoked. Whether this made the remote unsettled (then the endpoint
    /// keeps the track until its next flush).
    pub(crate) fn begin(&self, moves: bool) -> Result<bool, Error> {
        let first = moves && !self.unsettled.get();
        self.held.begin(first)?;
        if first {
            self.unsettled.set(true);
        }
        Ok(first)
    }

    /// After a flush that completed every operation begun before it.
    pub(crate) fn settle(&self) {
        if self.unsettled.replace(false) {
            self.held.settle();
        }
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.held.is_revoked()
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.held.let_go();
    }
}

/// A descriptor that its owner confirmed over a [`Link`](super::Link)
/// ([`Link::verify`](super::Link::verify)): the owner issued exactly these
/// bytes from a live registration, and counts the link as holding it until
/// the peer lets go. An endpoint connected through the same link
/// ([`Worker::connect`](super::Worker::connect)) unpacks it
/// ([`Endpoint::remote`](super::Endpoint::remote)).
///
/// Dropping it (and every [`Remote`](super::Remote) made from it, with
/// their operations flushed) lets the owner know the peer is done with it.
/// Once the owner revokes it ([`Link::revoke`](super::Link::revoke)), no
/// new remote is made from it and remotes made from it refuse every
/// operation ([`UcxError::Revoked`]).
pub struct Grant {
    descriptor: Descriptor,
    peer: Peer,
    held: Arc<Held>,
}

impl Grant {
    /// A grant of `descriptor`, confirmed over the link and context `peer`
    /// names, taking over a holder of `held`.
    pub(crate) fn new(descriptor: Descriptor, peer: Peer, held: Arc<Held>) -> Grant {
        Grant {
            descriptor,
            peer,
            held,
        }
    }

    /// The descriptor the owner confirmed.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The allocation's address in the owner's process.
    pub fn address(&self) -> u64 {
        self.descriptor.address()
    }

    /// Its length in bytes.
    pub fn size(&self) -> usize {
        self.descriptor.size()
    }

    /// Whether the owner revoked it (as far as the link has read).
    pub fn is_revoked(&self) -> bool {
        self.held.is_revoked()
    }

    pub(crate) fn peer(&self) -> Peer {
        self.peer
    }

    pub(crate) fn held(&self) -> &Arc<Held> {
        &self.held
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.held.let_go();
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("descriptor", &self.descriptor)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}
