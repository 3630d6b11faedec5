//! Apple backend: an IOSurface, locked at creation and pinned with `mlock`.
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

use super::{Backend, BlockOptions, Pinning, Region, page_size};
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

/// A Mach send right to an IOSurface: what [`Region::share`] returns on Apple
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

/// What [`Region::share`] returns on Apple platforms.
pub type Export = MachPort;

/// The surface behind one mapping.
pub(crate) struct Raw {
    surface: IOSurfaceRef,
}

pub(crate) fn system_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // Apple platforms always answer; the fallback keeps this function total.
    usize::try_from(page).unwrap_or(16384)
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

impl Backend for Raw {
    fn open(size: usize, options: &BlockOptions<'_>) -> Result<Region, Error> {
        let props = properties(size)?;
        // SAFETY: a valid properties dictionary; we own the returned surface.
        let surface = unsafe { IOSurfaceCreate(props.0) };
        drop(props);
        if surface.is_null() {
            return Err(oom("IOSurfaceCreate"));
        }
        // SAFETY: we own the reference IOSurfaceCreate returned.
        unsafe { map(surface, Some(size), options) }
    }

    fn share(&self) -> Result<Export, Error> {
        // SAFETY: a live surface.
        let port = unsafe { IOSurfaceCreateMachPort(self.surface) };
        if port == MACH_PORT_NULL {
            return Err(oom("IOSurfaceCreateMachPort"));
        }
        Ok(MachPort(port))
    }

    unsafe fn attach(export: Export, options: &BlockOptions<'_>) -> Result<Region, Error> {
        // SAFETY: a send right we own; the lookup does not consume it, and
        // `export` deallocates it when dropped at the end of this function.
        let surface = unsafe { IOSurfaceLookupFromMachPort(export.0) };
        if surface.is_null() {
            return Err(Error::BadHandle {
                reason: "the Mach port does not name an IOSurface",
            });
        }
        // SAFETY: we own the reference the lookup returned.
        unsafe { map(surface, None, options) }
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
    options: &BlockOptions<'_>,
) -> Result<Region, Error> {
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
    // From here the Region owns the surface; an early return releases it.
    let mut region = Region {
        ptr,
        size,
        pinned: false,
        raw: Raw { surface },
    };
    if options.prefault {
        for offset in (0..size).step_by(page) {
            // SAFETY: inside the locked surface's memory. A read never
            // clobbers what another process wrote.
            unsafe { ptr.as_ptr().add(offset).read_volatile() };
        }
    }
    // SAFETY: mlock on the surface's mapping in our address space.
    if unsafe { libc::mlock(ptr.as_ptr().cast(), size) } == 0 {
        region.pinned = true;
    } else if options.pinning == Pinning::Required {
        return Err(Error::Pin {
            bytes: size,
            source: io::Error::last_os_error(),
        });
    }
    Ok(region)
}
