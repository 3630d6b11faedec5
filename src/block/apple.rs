//! Apple backend: an IOSurface, locked at creation and pinned with `mlock`.
//!
//! An IOSurface has one fixed size, so this backend cannot reserve address
//! space ahead of what it commits: a Block's whole capacity is created and
//! committed at open, and there is nothing to commit later or to decommit
//! (both are refused). Private and shared Blocks are the same IOSurface;
//! sharing goes through a Mach port either way.
//!
//! Raw FFI to IOSurface.framework, CoreFoundation and the Mach port calls of
//! libSystem; no Objective-C. Another process reaches the same surface through
//! a Mach port (`IOSurfaceCreateMachPort` / `IOSurfaceLookupFromMachPort`):
//! global lookup by ID is deprecated as insecure, so the ID is only a label.
//!
//! CoreFoundation and IOSurface allocate with the system's `malloc`, never
//! through Rust's global allocator, so a global allocator can open Blocks.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use std::io;

use super::{BlockOptions, Pinning, Platform, Reserved, Shared, page_size};
use crate::Error;

/// An `IOSurfaceRef`, for Metal, the ANE and other IOSurface consumers.
pub type IOSurfaceRef = *mut c_void;

type CFTypeRef = *const c_void;
type CFStringRef = *const c_void;
type CFNumberRef = *const c_void;
type CFAllocatorRef = *const c_void;
type CFDictionaryRef = *const c_void;
type CFMutableDictionaryRef = *mut c_void;
type CFIndex = isize;
type CFNumberType = CFIndex;
type KernReturn = i32;
type MachPortName = u32;

const CF_NUMBER_SINT64: CFNumberType = 4;
const KERN_SUCCESS: KernReturn = 0;
const MACH_PORT_NULL: MachPortName = 0;

/// Opaque: only the address of the CoreFoundation constant is used.
#[repr(C)]
struct CFDictionaryKeyCallBacks {
    _opaque: [u8; 0],
}

/// Opaque: only the address of the CoreFoundation constant is used.
#[repr(C)]
struct CFDictionaryValueCallBacks {
    _opaque: [u8; 0],
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    static kCFTypeDictionaryKeyCallBacks: CFDictionaryKeyCallBacks;
    static kCFTypeDictionaryValueCallBacks: CFDictionaryValueCallBacks;
    fn CFDictionaryCreateMutable(
        allocator: CFAllocatorRef,
        capacity: CFIndex,
        key_callbacks: *const CFDictionaryKeyCallBacks,
        value_callbacks: *const CFDictionaryValueCallBacks,
    ) -> CFMutableDictionaryRef;
    fn CFDictionarySetValue(dict: CFMutableDictionaryRef, key: *const c_void, value: *const c_void);
    fn CFNumberCreate(
        allocator: CFAllocatorRef,
        the_type: CFNumberType,
        value: *const c_void,
    ) -> CFNumberRef;
    fn CFRelease(cf: CFTypeRef);
}

#[link(name = "IOSurface", kind = "framework")]
unsafe extern "C" {
    static kIOSurfaceWidth: CFStringRef;
    static kIOSurfaceHeight: CFStringRef;
    static kIOSurfaceBytesPerElement: CFStringRef;
    static kIOSurfaceBytesPerRow: CFStringRef;
    static kIOSurfaceAllocSize: CFStringRef;
    static kIOSurfacePixelFormat: CFStringRef;
    fn IOSurfaceCreate(properties: CFDictionaryRef) -> IOSurfaceRef;
    fn IOSurfaceLock(surface: IOSurfaceRef, options: u32, seed: *mut u32) -> KernReturn;
    fn IOSurfaceUnlock(surface: IOSurfaceRef, options: u32, seed: *mut u32) -> KernReturn;
    fn IOSurfaceGetBaseAddress(surface: IOSurfaceRef) -> *mut c_void;
    fn IOSurfaceGetAllocSize(surface: IOSurfaceRef) -> usize;
    fn IOSurfaceGetID(surface: IOSurfaceRef) -> u32;
    fn IOSurfaceCreateMachPort(surface: IOSurfaceRef) -> MachPortName;
    fn IOSurfaceLookupFromMachPort(port: MachPortName) -> IOSurfaceRef;
}

unsafe extern "C" {
    static mach_task_self_: MachPortName;
    fn mach_port_deallocate(task: MachPortName, name: MachPortName) -> KernReturn;
}

/// A Mach send right to an IOSurface: what [`Region::share`](super::Region::share) returns on Apple
/// platforms. Dropping it deallocates the right.
#[derive(Debug)]
pub struct MachPort(MachPortName);

impl MachPort {
    /// Takes ownership of a send right received from elsewhere (a Mach
    /// message, XPC).
    ///
    /// # Safety
    /// `port` is a send right this task owns and nothing else deallocates it.
    pub unsafe fn from_raw(port: u32) -> MachPort {
        MachPort(port)
    }

    /// The port name, still owned by `self`.
    pub fn as_raw(&self) -> u32 {
        self.0
    }

    /// Gives up ownership of the send right, to send it elsewhere.
    pub fn into_raw(self) -> u32 {
        let port = self.0;
        core::mem::forget(self);
        port
    }
}

impl Drop for MachPort {
    fn drop(&mut self) {
        // SAFETY: we own this send right (`from_raw`'s contract, or we created
        // it); `mach_task_self_` is initialized by libSystem before main.
        unsafe { mach_port_deallocate(mach_task_self_, self.0) };
    }
}

/// What [`Region::share`](super::Region::share) returns on Apple platforms.
pub type Export = MachPort;

/// The surface behind one mapping.
pub(crate) struct Raw {
    surface: IOSurfaceRef,
}

/// Faults every page of `len` bytes at `at` in by reading it (a read never
/// clobbers what another process wrote).
///
/// # Safety
/// The range is mapped and readable.
pub(crate) unsafe fn populate(at: *mut u8, len: usize) -> Result<(), Error> {
    for offset in (0..len).step_by(page_size()) {
        // SAFETY: `offset < len`, inside the mapping.
        unsafe { at.add(offset).read_volatile() };
    }
    Ok(())
}

/// Locks `len` bytes at `at`, faulting them in; whether it worked.
///
/// # Safety
/// The range is mapped and readable.
pub(crate) unsafe fn lock_pages(at: *mut u8, len: usize) -> bool {
    // SAFETY: mlock on the caller's mapping changes no byte.
    unsafe { libc::mlock(at.cast(), len) == 0 }
}

/// Unlocks `len` bytes at `at`.
///
/// # Safety
/// As `lock_pages`.
pub(crate) unsafe fn unlock_pages(at: *mut u8, len: usize) {
    // SAFETY: munlock on the caller's mapping changes no byte.
    unsafe { libc::munlock(at.cast(), len) };
}

fn cannot_reserve() -> Error {
    Error::Unsupported {
        what: "committing or decommitting an IOSurface Block: its whole capacity is committed at open",
    }
}

/// Releases a CoreFoundation object when dropped.
struct CfOwned(CFTypeRef);

impl Drop for CfOwned {
    fn drop(&mut self) {
        // SAFETY: we hold the one reference a Create call returned.
        unsafe { CFRelease(self.0) }
    }
}

fn oom(call: &'static str) -> Error {
    Error::Os {
        call,
        source: io::ErrorKind::OutOfMemory.into(),
    }
}

/// The properties of a one-row, one-byte-per-element surface of `size` bytes.
fn properties(size: usize) -> Result<CfOwned, Error> {
    // SAFETY: the callbacks are CoreFoundation's own constants for CF-typed
    // keys and values; the dictionary retains what is put in.
    let dict = unsafe {
        CFDictionaryCreateMutable(
            ptr::null(),
            6,
            &kCFTypeDictionaryKeyCallBacks,
            &kCFTypeDictionaryValueCallBacks,
        )
    };
    if dict.is_null() {
        return Err(oom("CFDictionaryCreateMutable"));
    }
    let dict = CfOwned(dict);
    let size = i64::try_from(size).map_err(|_| Error::Overflow { requested: size })?;
    // SAFETY: the keys are IOSurface's constant strings.
    let entries = unsafe {
        [
            (kIOSurfaceWidth, size),
            (kIOSurfaceHeight, 1),
            (kIOSurfaceBytesPerElement, 1),
            (kIOSurfaceBytesPerRow, size),
            (kIOSurfaceAllocSize, size),
            (kIOSurfacePixelFormat, 0),
        ]
    };
    for (key, value) in entries {
        // SAFETY: `value` is an i64 that outlives the call, as SInt64 says.
        let number =
            unsafe { CFNumberCreate(ptr::null(), CF_NUMBER_SINT64, (&raw const value).cast()) };
        if number.is_null() {
            return Err(oom("CFNumberCreate"));
        }
        let number = CfOwned(number);
        // SAFETY: a live mutable dictionary with CF-typed callbacks; it retains
        // both key and value, so releasing `number` afterwards is right.
        unsafe { CFDictionarySetValue(dict.0.cast_mut(), key, number.0) };
    }
    Ok(dict)
}

impl Platform for Raw {
    fn reserve(
        capacity: usize,
        granule: usize,
        _align: usize,
        _open: usize,
        options: &BlockOptions<'_>,
    ) -> Result<Reserved, Error> {
        if options.pages.huge_page_size().is_some() {
            return Err(Error::Unsupported {
                what: "explicit huge pages: IOSurface Blocks use the system's pages",
            });
        }
        if !options.inherit {
            return Err(Error::Unsupported {
                what: "keeping a Block out of forked children: not implemented for IOSurface Blocks",
            });
        }
        let props = properties(capacity)?;
        // SAFETY: a valid properties dictionary; we own the returned surface.
        let surface = unsafe { IOSurfaceCreate(props.0) };
        drop(props);
        if surface.is_null() {
            return Err(oom("IOSurfaceCreate"));
        }
        // SAFETY: we own the reference IOSurfaceCreate returned.
        unsafe { map(surface, Some(capacity), granule, options) }
    }

    unsafe fn map(&self, _base: NonNull<u8>, _from: usize, _to: usize) -> Result<(), Error> {
        Err(cannot_reserve())
    }

    unsafe fn lock(
        &self,
        base: NonNull<u8>,
        from: usize,
        to: usize,
        _populate: bool,
    ) -> Result<(), io::Error> {
        // SAFETY: the caller's contract: `from..to` is ours and mapped.
        if unsafe { libc::mlock(base.as_ptr().add(from).cast(), to - from) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    unsafe fn populate(&self, base: NonNull<u8>, from: usize, to: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract.
        unsafe { populate(base.as_ptr().add(from), to - from) }
    }

    unsafe fn unmap(&self, _base: NonNull<u8>, _from: usize, _to: usize) -> Result<(), Error> {
        Err(cannot_reserve())
    }

    fn can_unmap(&self) -> bool {
        false
    }

    unsafe fn discard(&self, _base: NonNull<u8>, _from: usize, _to: usize) -> Result<(), Error> {
        Err(cannot_reserve())
    }

    fn can_discard(&self) -> bool {
        false
    }

    unsafe fn drop_pages(
        &self,
        _base: NonNull<u8>,
        _from: usize,
        _to: usize,
    ) -> Result<bool, Error> {
        Err(cannot_reserve())
    }

    fn share(&self) -> Result<Export, Error> {
        // SAFETY: a live surface.
        let port = unsafe { IOSurfaceCreateMachPort(self.surface) };
        if port == MACH_PORT_NULL {
            return Err(oom("IOSurfaceCreateMachPort"));
        }
        Ok(MachPort(port))
    }

    unsafe fn attach(
        export: Export,
        options: &BlockOptions<'_>,
    ) -> Result<(Reserved, usize), Error> {
        if !options.inherit {
            return Err(Error::Unsupported {
                what: "keeping a Block out of forked children: not implemented for IOSurface Blocks",
            });
        }
        // SAFETY: a send right we own; the lookup does not consume it, and
        // `export` deallocates it when dropped at the end of this function.
        let surface = unsafe { IOSurfaceLookupFromMachPort(export.0) };
        if surface.is_null() {
            return Err(Error::BadHandle {
                reason: "the Mach port does not name an IOSurface",
            });
        }
        // SAFETY: we own the reference the lookup returned.
        let reserved = unsafe { map(surface, None, page_size(), options)? };
        let size = reserved.committed;
        Ok((reserved, size))
    }

    fn shared_size(&self) -> Result<Option<Shared>, Error> {
        // An IOSurface never changes size.
        Ok(None)
    }

    unsafe fn release(&mut self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: our own mapping and our own surface reference, locked by `map`.
        unsafe {
            libc::munlock(ptr.as_ptr().cast(), size);
            IOSurfaceUnlock(self.surface, 0, ptr::null_mut());
            CFRelease(self.surface.cast_const());
        }
    }
}

impl Raw {
    pub(crate) fn handle(&self) -> IOSurfaceRef {
        self.surface
    }

    pub(crate) fn id(&self) -> u32 {
        // SAFETY: a live surface.
        unsafe { IOSurfaceGetID(self.surface) }
    }
}

/// Locks `surface`, then prefaults and pins its memory as `options` say.
/// `size` is the requested size for a new surface, `None` for an attached one.
///
/// # Safety
/// `surface` is a reference the caller owns; it passes to the Region (or is
/// released on failure).
unsafe fn map(
    surface: IOSurfaceRef,
    size: Option<usize>,
    granule: usize,
    options: &BlockOptions<'_>,
) -> Result<Reserved, Error> {
    // SAFETY: a live surface we own.
    let kr = unsafe { IOSurfaceLock(surface, 0, ptr::null_mut()) };
    if kr != KERN_SUCCESS {
        // SAFETY: release the reference we were given.
        unsafe { CFRelease(surface.cast_const()) };
        return Err(Error::Platform {
            call: "IOSurfaceLock",
            code: kr,
        });
    }
    // SAFETY: a locked surface has a stable base address and size.
    let (base, alloc) = unsafe {
        (
            IOSurfaceGetBaseAddress(surface),
            IOSurfaceGetAllocSize(surface),
        )
    };
    let page = page_size();
    let size = match size {
        Some(size) => size,
        None => alloc - alloc % page,
    };
    let usable = size > 0 && size <= alloc && base.addr().is_multiple_of(page);
    let Some(ptr) = NonNull::new(base.cast::<u8>()).filter(|_| usable) else {
        // SAFETY: undo the lock, release the reference.
        unsafe {
            IOSurfaceUnlock(surface, 0, ptr::null_mut());
            CFRelease(surface.cast_const());
        }
        return Err(Error::BadHandle {
            reason: "the IOSurface has no page-aligned memory of the expected size",
        });
    };
    let mut reserved = Reserved {
        raw: Raw { surface },
        ptr,
        capacity: size,
        committed: size,
        locked: 0,
        granule,
    };
    if options.prefault {
        // SAFETY: inside the locked surface's memory.
        unsafe { populate(ptr.as_ptr(), size)? };
    }
    if options.pinning != Pinning::Off {
        // SAFETY: mlock on the surface's mapping in our address space.
        if unsafe { libc::mlock(ptr.as_ptr().cast(), size) } == 0 {
            reserved.locked = size;
        } else {
            let source = io::Error::last_os_error();
            if !options.quiet {
                super::report::refusal(size, &source, options.pinning == Pinning::Required);
            }
            if options.pinning == Pinning::Required {
                // Dropping `reserved` would need a Region; release by hand.
                // SAFETY: the surface was locked above and is ours.
                unsafe {
                    IOSurfaceUnlock(surface, 0, ptr::null_mut());
                    CFRelease(surface.cast_const());
                }
                return Err(super::report::pin_error(size, source));
            }
        }
    }
    Ok(reserved)
}
