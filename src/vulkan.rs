//! Vulkan: any Vulkan GPU reads and writes a Block's pages with no copies
//! (feature `vulkan`).
//!
//! `VK_EXT_external_memory_host` imports an existing host allocation as
//! device memory: the device then reads and writes the Block's own pages.
//! [`Registered`] imports every committed part of an allocator's Blocks into
//! a [`Device`] (and what they commit later, as it is committed; the
//! registration layer is `register.rs`, this module is the Vulkan calls),
//! each part as one `VkDeviceMemory` with a storage buffer bound over all of
//! it, and gives, for any allocation, the buffer, the memory and the offset
//! that hold it ([`Registered::buffer_range`]), or a buffer bound over just
//! its bytes ([`Registered::bind_buffer`]). Everything is freed before the
//! pages go.
//!
//! The Vulkan loader is loaded at run time (ash's `loaded` feature): the
//! crate builds with no Vulkan SDK, and without a loader or a device the
//! calls return [`VulkanError::NoLoader`] or [`VulkanError::NoDevice`].
//! Mesa's software driver lavapipe has the extension, which is how CI runs
//! the tests for real.
//!
//! ```no_run
//! use allocator_api2::vec::Vec;
//! use unimem::Tape;
//! use unimem::vulkan::{Device, Registered};
//!
//! let device = Device::open()?; // the first device that can import host memory
//! let tape = Registered::new(&device, Tape::open(16 << 20)?)?;
//! let mut v: Vec<u32, _> = Vec::with_capacity_in(1 << 20, &*tape);
//! v.resize(1 << 20, 0);
//! let range = tape.buffer_slice(&v).expect("in an imported part");
//! // Bind `range.buffer` at `range.offset` in a descriptor set, dispatch,
//! // wait, and read `v` here.
//! # let _ = range;
//! # Ok::<(), unimem::Error>(())
//! ```

use core::ffi::c_void;
use core::fmt;
use core::ptr::NonNull;
use std::sync::Arc;

pub use ash;
use ash::vk;

use crate::Error;
use crate::register::{Backend, Regions, Span};

/// The one handle type this module imports.
const HOST: vk::ExternalMemoryHandleTypeFlags =
    vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

/// Usage of the buffers bound over imported memory.
const USAGE: vk::BufferUsageFlags = vk::BufferUsageFlags::from_raw(
    vk::BufferUsageFlags::STORAGE_BUFFER.as_raw()
        | vk::BufferUsageFlags::TRANSFER_SRC.as_raw()
        | vk::BufferUsageFlags::TRANSFER_DST.as_raw(),
);

/// The largest part imported as one `VkDeviceMemory`, whatever the driver
/// allows more (`maxMemoryAllocationSize` caps it further).
pub const MAX_IMPORT: usize = 1 << 30;

pub use crate::error::VulkanError;

/// The error of a failed call.
fn failed(call: &'static str) -> impl FnOnce(vk::Result) -> Error {
    move |result| VulkanError::Call { call, result }.into()
}

/// A Vulkan device that imports host memory: its instance, physical device,
/// logical device with `VK_EXT_external_memory_host`, and a queue family
/// with compute.
pub struct Device {
    /// Keeps the loader loaded while the instance lives.
    _entry: ash::Entry,
    instance: ash::Instance,
    physical: vk::PhysicalDevice,
    device: ash::Device,
    host: ash::ext::external_memory_host::Device,
    queue_family: u32,
    queue: vk::Queue,
    alignment: u64,
    max_allocation: u64,
    memory: vk::PhysicalDeviceMemoryProperties,
    /// Whether this value created the device and instance (and destroys them).
    owned: bool,
}

// SAFETY: the handles are Vulkan objects, usable from any thread; the queue
// is used only by callers, who synchronize its use as Vulkan requires.
unsafe impl Send for Device {}
// SAFETY: as above; `&self` methods only read fields and call thread-safe
// entry points (memory allocation, buffer creation).
unsafe impl Sync for Device {}

impl Device {
    /// Loads the Vulkan loader, and opens the first physical device that has
    /// `VK_EXT_external_memory_host` and a compute queue (Vulkan 1.1 or
    /// later), with the extension enabled.
    pub fn open() -> Result<Arc<Device>, Error> {
        // SAFETY: loading the loader runs its initializers; it is built to be
        // loaded this way (dlopen is how every Vulkan program reaches it).
        let entry = unsafe { ash::Entry::load() };
        Device::open_with(entry.map_err(|error| VulkanError::NoLoader {
            reason: error.to_string(),
        })?)
    }

    /// As [`Device::open`], loading the loader from `path`.
    pub fn open_from(path: impl AsRef<std::ffi::OsStr>) -> Result<Arc<Device>, Error> {
        // SAFETY: as in `open`, for the library at `path`.
        let entry = unsafe { ash::Entry::load_from(path) };
        Device::open_with(entry.map_err(|error| VulkanError::NoLoader {
            reason: error.to_string(),
        })?)
    }

    /// As [`Device::open`], with a loader the caller loaded.
    pub fn open_with(entry: ash::Entry) -> Result<Arc<Device>, Error> {
        // SAFETY: plain queries and creation calls on objects made here.
        unsafe {
            match entry.try_enumerate_instance_version() {
                Ok(Some(version)) if version >= vk::API_VERSION_1_1 => {}
                Ok(_) => return Err(VulkanError::NoDevice.into()),
                Err(result) => return Err(failed("vkEnumerateInstanceVersion")(result)),
            }
            let app = vk::ApplicationInfo::default()
                .application_name(c"unimem")
                .api_version(vk::API_VERSION_1_1);
            let instance = match entry.create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            ) {
                Ok(instance) => instance,
                Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => {
                    return Err(VulkanError::NoDevice.into());
                }
                Err(result) => return Err(failed("vkCreateInstance")(result)),
            };
            match Device::pick(&instance) {
                Ok(Some((physical, queue_family))) => {
                    Device::create(entry, instance, physical, queue_family)
                }
                Ok(None) => {
                    instance.destroy_instance(None);
                    Err(VulkanError::NoDevice.into())
                }
                Err(error) => {
                    instance.destroy_instance(None);
                    Err(error)
                }
            }
        }
    }

    /// The first physical device with the extension and a compute queue.
    ///
    /// # Safety
    /// `instance` is live.
    unsafe fn pick(instance: &ash::Instance) -> Result<Option<(vk::PhysicalDevice, u32)>, Error> {
        let extension = ash::ext::external_memory_host::NAME;
        // SAFETY: the caller's contract; queries only.
        let devices = match unsafe { instance.enumerate_physical_devices() } {
            Ok(devices) => devices,
            // An ICD with no hardware behind it says so this way.
            Err(vk::Result::ERROR_INITIALIZATION_FAILED) => return Ok(None),
            Err(result) => return Err(failed("vkEnumeratePhysicalDevices")(result)),
        };
        Ok(devices.into_iter().find_map(|physical| {
            // SAFETY: queries on a physical device of this instance.
            unsafe {
                let properties = instance.get_physical_device_properties(physical);
                if properties.api_version < vk::API_VERSION_1_1 {
                    return None;
                }
                let has = instance
                    .enumerate_device_extension_properties(physical)
                    .ok()?
                    .iter()
                    .any(|e| e.extension_name_as_c_str() == Ok(extension));
                let family = instance
                    .get_physical_device_queue_family_properties(physical)
                    .iter()
                    .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))?;
                has.then_some((physical, family as u32))
            }
        }))
    }

    /// Creates the logical device and fills in the rest.
    ///
    /// # Safety
    /// `physical` has the extension and `queue_family` compute.
    unsafe fn create(
        entry: ash::Entry,
        instance: ash::Instance,
        physical: vk::PhysicalDevice,
        queue_family: u32,
    ) -> Result<Arc<Device>, Error> {
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family)
            .queue_priorities(&priorities)];
        let extensions = [ash::ext::external_memory_host::NAME.as_ptr()];
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions);
        // SAFETY: the caller's contract; the create info lives through the call.
        let device = match unsafe { instance.create_device(physical, &info, None) } {
            Ok(device) => device,
            Err(result) => {
                // SAFETY: nothing else uses the instance.
                unsafe { instance.destroy_instance(None) };
                return Err(failed("vkCreateDevice")(result));
            }
        };
        // SAFETY: the device was created with the extension enabled.
        Ok(Arc::new(unsafe {
            Device::finish(entry, instance, physical, device, queue_family, true)
        }))
    }

    /// Takes a device the caller created: `device` on `physical` of
    /// `instance`, with `VK_EXT_external_memory_host` enabled and a queue of
    /// `queue_family`. Dropping the value destroys neither.
    ///
    /// # Safety
    /// The handles are live for as long as the returned value, and what
    /// they say above is true of them.
    pub unsafe fn from_raw(
        entry: ash::Entry,
        instance: ash::Instance,
        physical: vk::PhysicalDevice,
        device: ash::Device,
        queue_family: u32,
    ) -> Result<Arc<Device>, Error> {
        let name = c"vkGetMemoryHostPointerPropertiesEXT";
        // SAFETY: the caller's contract: live handles.
        let found = unsafe { instance.get_device_proc_addr(device.handle(), name.as_ptr()) };
        if found.is_none() {
            return Err(VulkanError::MissingExtension {
                extension: "VK_EXT_external_memory_host",
            }
            .into());
        }
        // SAFETY: the caller's contract, and the extension is enabled.
        Ok(Arc::new(unsafe {
            Device::finish(entry, instance, physical, device, queue_family, false)
        }))
    }

    /// # Safety
    /// As `from_raw`.
    unsafe fn finish(
        entry: ash::Entry,
        instance: ash::Instance,
        physical: vk::PhysicalDevice,
        device: ash::Device,
        queue_family: u32,
        owned: bool,
    ) -> Device {
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut maintenance = vk::PhysicalDeviceMaintenance3Properties::default();
        let mut properties = vk::PhysicalDeviceProperties2::default()
            .push_next(&mut host)
            .push_next(&mut maintenance);
        // SAFETY: the caller's contract; queries only.
        unsafe {
            instance.get_physical_device_properties2(physical, &mut properties);
            Device {
                host: ash::ext::external_memory_host::Device::new(&instance, &device),
                queue: device.get_device_queue(queue_family, 0),
                memory: instance.get_physical_device_memory_properties(physical),
                alignment: host.min_imported_host_pointer_alignment.max(1),
                max_allocation: maintenance.max_memory_allocation_size,
                _entry: entry,
                instance,
                physical,
                device,
                queue_family,
                owned,
            }
        }
    }

    /// The logical device.
    pub fn device(&self) -> &ash::Device {
        &self.device
    }

    /// The instance.
    pub fn instance(&self) -> &ash::Instance {
        &self.instance
    }

    /// The physical device.
    pub fn physical(&self) -> vk::PhysicalDevice {
        self.physical
    }

    /// A queue family with compute, and its first queue.
    pub fn queue(&self) -> (u32, vk::Queue) {
        (self.queue_family, self.queue)
    }

    /// The device's `minImportedHostPointerAlignment`: imported ranges start
    /// and end on multiples of it (4096 on lavapipe and NVIDIA).
    pub fn import_alignment(&self) -> u64 {
        self.alignment
    }

    /// The device's name.
    pub fn name(&self) -> String {
        // SAFETY: a query on a live physical device.
        let properties = unsafe { self.instance.get_physical_device_properties(self.physical) };
        properties
            .device_name_as_c_str()
            .map_or_else(|_| "?".into(), |name| name.to_string_lossy().into_owned())
    }

    /// The device's PCI address, from `VK_EXT_pci_bus_info`; `None` where
    /// the driver does not offer the extension (software devices such as
    /// lavapipe have no PCI address).
    pub fn pci_address(&self) -> Option<String> {
        // SAFETY: the instance and physical device are live while `self` is.
        unsafe { pci_address(&self.instance, self.physical) }
    }

    /// Imports the `len` bytes at `host` and binds a buffer over all of them.
    fn import(&self, host: NonNull<u8>, len: usize) -> Result<Import, Error> {
        let address = host.as_ptr().addr();
        if !(address as u64).is_multiple_of(self.alignment)
            || !(len as u64).is_multiple_of(self.alignment)
        {
            return Err(VulkanError::Misaligned {
                address,
                len,
                alignment: self.alignment,
            }
            .into());
        }
        let pointer = host.as_ptr().cast::<c_void>();
        let mut pointer_properties = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: `host..host + len` is mapped, committed memory (the
        // registration layer's contract); the out-pointer is valid. ash has
        // no wrapper for this entry point.
        unsafe {
            (self.host.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                HOST,
                pointer,
                &mut pointer_properties,
            )
        }
        .result()
        .map_err(failed("vkGetMemoryHostPointerPropertiesEXT"))?;
        let buffer = self.buffer(len as u64, USAGE)?;
        // SAFETY: a buffer just created on this device.
        let requirements = unsafe { self.device.get_buffer_memory_requirements(buffer) };
        let bits = pointer_properties.memory_type_bits & requirements.memory_type_bits;
        let Some(memory_type) = self.memory_type(bits) else {
            // SAFETY: unused, ours.
            unsafe { self.device.destroy_buffer(buffer, None) };
            return Err(VulkanError::NoMemoryType.into());
        };
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(HOST)
            .host_pointer(pointer);
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(len as u64)
            .memory_type_index(memory_type)
            .push_next(&mut import);
        // SAFETY: imports memory the registration keeps mapped until it frees
        // the import (`unregister`).
        let memory = match unsafe { self.device.allocate_memory(&info, None) } {
            Ok(memory) => memory,
            Err(result) => {
                // SAFETY: unused, ours.
                unsafe { self.device.destroy_buffer(buffer, None) };
                return Err(failed("vkAllocateMemory")(result));
            }
        };
        // SAFETY: both ours; offset 0 meets any alignment.
        if let Err(result) = unsafe { self.device.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: unused, ours.
            unsafe {
                self.device.destroy_buffer(buffer, None);
                self.device.free_memory(memory, None);
            }
            return Err(failed("vkBindBufferMemory")(result));
        }
        Ok(Import {
            memory,
            buffer,
            memory_type,
        })
    }

    /// A buffer of `size` bytes with `usage` that imported host memory can
    /// back.
    fn buffer(&self, size: u64, usage: vk::BufferUsageFlags) -> Result<vk::Buffer, Error> {
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(HOST);
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        // SAFETY: a plain creation call with a valid create info.
        unsafe { self.device.create_buffer(&info, None) }.map_err(failed("vkCreateBuffer"))
    }

    /// The alignment a buffer with `usage` needs of its offset in imported
    /// memory (`VkMemoryRequirements::alignment`, asked of a probe buffer):
    /// where [`Registered::bind_buffer`] can bind one (64 bytes for storage
    /// buffers on lavapipe).
    pub fn buffer_alignment(&self, usage: vk::BufferUsageFlags) -> Result<u64, Error> {
        let probe = self.buffer(self.alignment, usage)?;
        // SAFETY: a buffer just created on this device, destroyed unused.
        unsafe {
            let requirements = self.device.get_buffer_memory_requirements(probe);
            self.device.destroy_buffer(probe, None);
            Ok(requirements.alignment.max(1))
        }
    }

    /// A new buffer with `usage` bound over `range.size` bytes at
    /// `range.offset` of the imported `range.memory`; the caller destroys
    /// it. The offset must meet the buffer's memory alignment, or the error
    /// is [`VulkanError::Misaligned`] (with `address`, the bytes' host
    /// address, to name them).
    ///
    /// # Safety
    /// `range.memory` is an import of this device, live until the buffer is
    /// destroyed, and `range.offset + range.size` lies inside it.
    pub(crate) unsafe fn bind(
        &self,
        range: &BufferRange,
        usage: vk::BufferUsageFlags,
        address: usize,
    ) -> Result<vk::Buffer, Error> {
        let buffer = self.buffer(range.size, usage)?;
        // SAFETY: the buffer was just made on this device; the memory is a
        // live import that holds the range (the caller's contract).
        let bound = unsafe {
            let requirements = self.device.get_buffer_memory_requirements(buffer);
            if !range.offset.is_multiple_of(requirements.alignment.max(1)) {
                self.device.destroy_buffer(buffer, None);
                return Err(VulkanError::Misaligned {
                    address,
                    len: range.size as usize,
                    alignment: requirements.alignment,
                }
                .into());
            }
            self.device
                .bind_buffer_memory(buffer, range.memory, range.offset)
        };
        if let Err(result) = bound {
            // SAFETY: unused, ours.
            unsafe { self.device.destroy_buffer(buffer, None) };
            return Err(failed("vkBindBufferMemory")(result));
        }
        Ok(buffer)
    }

    /// The index of a host-visible memory type among `bits`, host-coherent
    /// if there is one.
    fn memory_type(&self, bits: u32) -> Option<u32> {
        let types = &self.memory.memory_types[..self.memory.memory_type_count as usize];
        let allowed = |i: usize| bits & (1 << i) != 0;
        let with = |flags: vk::MemoryPropertyFlags| {
            (0..types.len()).find(|&i| allowed(i) && types[i].property_flags.contains(flags))
        };
        with(vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT)
            .or_else(|| with(vk::MemoryPropertyFlags::HOST_VISIBLE))
            .map(|i| i as u32)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: ours, and every import made through this device holds
            // an `Arc` to it, so none is left.
            unsafe {
                let _ = self.device.device_wait_idle();
                self.device.destroy_device(None);
                self.instance.destroy_instance(None);
            }
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name())
            .field("import_alignment", &self.alignment)
            .field("queue_family", &self.queue_family)
            .finish_non_exhaustive()
    }
}

/// The PCI address of `physical` (`0000:3b:00.0`), from
/// `VK_EXT_pci_bus_info`; `None` where the driver does not offer it.
///
/// # Safety
/// `physical` is a live physical device of the live `instance`.
unsafe fn pci_address(instance: &ash::Instance, physical: vk::PhysicalDevice) -> Option<String> {
    let extension = ash::ext::pci_bus_info::NAME;
    // SAFETY: the caller's contract; queries only.
    let offered = unsafe { instance.enumerate_device_extension_properties(physical) }
        .ok()?
        .iter()
        .any(|e| e.extension_name_as_c_str() == Ok(extension));
    if !offered {
        return None;
    }
    let mut pci = vk::PhysicalDevicePCIBusInfoPropertiesEXT::default();
    let mut properties = vk::PhysicalDeviceProperties2::default().push_next(&mut pci);
    // SAFETY: the caller's contract; a query whose chain lives through the
    // call (a supported extension's structure may be chained without
    // enabling it).
    unsafe { instance.get_physical_device_properties2(physical, &mut properties) };
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        pci.pci_domain, pci.pci_bus, pci.pci_device, pci.pci_function
    ))
}

impl crate::Node {
    /// The NUMA node nearest `device`: its PCI address from the driver
    /// (`VK_EXT_pci_bus_info`, [`Device::pci_address`]), then the kernel's
    /// word for that device ([`Node::near_pci`](crate::Node::near_pci)).
    /// `None` where the kernel names no node (a machine of one node).
    ///
    /// Errors: the driver does not offer the extension
    /// ([`VulkanError::MissingExtension`]; lavapipe, a software device with
    /// no PCI address, does not), and those of `near_pci`.
    #[cfg_attr(docsrs, doc(cfg(feature = "vulkan")))]
    pub fn near_vulkan(device: &Device) -> Result<Option<crate::Node>, Error> {
        // SAFETY: the device's own live handles.
        unsafe { crate::Node::near_vulkan_physical(&device.instance, device.physical) }
    }

    /// As [`near_vulkan`](crate::Node::near_vulkan), for a physical device
    /// an application enumerated itself.
    ///
    /// # Safety
    /// `physical` is a live physical device of the live `instance`.
    #[cfg_attr(docsrs, doc(cfg(feature = "vulkan")))]
    pub unsafe fn near_vulkan_physical(
        instance: &ash::Instance,
        physical: vk::PhysicalDevice,
    ) -> Result<Option<crate::Node>, Error> {
        // SAFETY: the caller's contract.
        let Some(address) = (unsafe { pci_address(instance, physical) }) else {
            return Err(VulkanError::MissingExtension {
                extension: "VK_EXT_pci_bus_info",
            }
            .into());
        };
        crate::Node::near_pci(&address)
    }
}

/// One imported part: the device memory over the host pages, a buffer bound
/// over all of it, and the memory type chosen.
#[derive(Clone, Copy, Debug)]
pub struct Import {
    /// The imported memory.
    pub memory: vk::DeviceMemory,
    /// A storage (and transfer) buffer over all of it, at offset 0.
    pub buffer: vk::Buffer,
    /// The memory type it was imported as (host-visible).
    pub memory_type: u32,
}

/// Vulkan as a registration backend: each part is one host-pointer import.
#[derive(Debug)]
pub struct Vulkan {
    device: Arc<Device>,
    chunk: usize,
    /// Whether freeing an import waits for the device first
    /// (`vkDeviceWaitIdle`). Off where the device's queue belongs to wgpu
    /// (`crate::wgpu`): waiting idle would touch that queue without its
    /// lock, and the buffers wgpu uses over the imports are waited for and
    /// released before the registration can drop.
    wait_idle: bool,
}

impl Backend for Vulkan {
    type Chunk = Import;

    fn register(&self, host: NonNull<u8>, len: usize) -> Result<Import, Error> {
        self.device.import(host, len)
    }

    unsafe fn unregister(&self, _host: NonNull<u8>, _len: usize, import: Import) {
        // SAFETY: the caller's contract: an import this backend made and has
        // not freed; the device finishes any work that uses it first (or,
        // without `wait_idle`, no work can use it any more).
        unsafe {
            if self.wait_idle {
                let _ = self.device.device.device_wait_idle();
            }
            self.device.device.destroy_buffer(import.buffer, None);
            self.device.device.free_memory(import.memory, None);
        }
    }

    fn max_chunk(&self) -> usize {
        self.chunk
    }

    fn continues(&self, _prev: &Span<Import>, _next: &Span<Import>) -> bool {
        // Two imports are two objects: no buffer covers both.
        false
    }
}

/// An allocator (or Block) whose Blocks are imported into a Vulkan device.
///
/// It owns what it imports, so the pages cannot be unmapped while the device
/// may use them, and derefs to it for allocation. Memory the allocator
/// commits later is imported as it is committed, as a part of its own; an
/// allocation that straddles two parts has no single buffer
/// ([`buffer_range`](Registered::buffer_range) says `None`: commit the Block
/// ahead, or open the allocator with all it needs committed). Dropping it
/// waits for the device, then frees every buffer and import.
pub type Registered<A> = crate::register::Registered<A, Vulkan>;

/// Where an allocation is on the device: a buffer, the memory behind it,
/// and the offset of the allocation in both.
#[derive(Clone, Copy, Debug)]
pub struct BufferRange {
    /// A buffer over the whole imported part, bound at offset 0.
    pub buffer: vk::Buffer,
    /// The imported memory.
    pub memory: vk::DeviceMemory,
    /// The allocation's offset in the buffer and the memory.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
}

impl<A: Regions> crate::register::Registered<A, Vulkan> {
    /// Imports every committed part of `inner`'s Blocks into `device`, and
    /// what they commit from now on.
    pub fn new(device: &Arc<Device>, inner: A) -> Result<Self, Error> {
        Self::import(device, inner, true)
    }

    /// As `new`; `wait_idle` says whether freeing an import waits for the
    /// device first (see [`Vulkan`]'s field).
    pub(crate) fn import(device: &Arc<Device>, inner: A, wait_idle: bool) -> Result<Self, Error> {
        let chunk = usize::try_from(device.max_allocation)
            .unwrap_or(usize::MAX)
            .min(MAX_IMPORT);
        let chunk = chunk - chunk % device.alignment.max(1) as usize;
        if chunk == 0 {
            return Err(Error::InvalidArgument {
                reason: "the device's largest allocation is below its import alignment",
            });
        }
        let backend = Vulkan {
            device: device.clone(),
            chunk,
            wait_idle,
        };
        Self::with_backend(backend, inner)
    }

    /// The buffer, memory and offset that hold `bytes` bytes from `ptr`, if
    /// they lie in one imported part.
    pub fn buffer_range<T: ?Sized>(&self, ptr: *const T, bytes: usize) -> Option<BufferRange> {
        let (range, offset) = self.lookup(ptr.cast::<u8>().addr(), bytes)?;
        Some(BufferRange {
            buffer: range.chunk.buffer,
            memory: range.chunk.memory,
            offset: offset as u64,
            size: bytes as u64,
        })
    }

    /// The buffer, memory and offset of a slice in an imported part.
    pub fn buffer_slice<T>(&self, slice: &[T]) -> Option<BufferRange> {
        self.buffer_range(slice.as_ptr(), size_of_val(slice))
    }

    /// A new buffer bound over exactly the bytes of `slice` (for shaders
    /// that take a whole buffer, or APIs without offsets), destroyed when the
    /// returned guard drops. `None` if the slice is not in one imported part;
    /// its offset there must meet the buffer's memory alignment (allocations
    /// aligned to 256 bytes always do).
    pub fn bind_buffer<T>(&self, slice: &[T]) -> Result<Option<BoundBuffer<'_>>, Error> {
        let Some(range) = self.buffer_slice(slice) else {
            return Ok(None);
        };
        let device = &self.backend().device;
        let whole = BufferRange {
            size: range.size.max(1),
            ..range
        };
        // SAFETY: the memory is an import of the registration, which
        // outlives the guard, and holds the slice's bytes (at least one:
        // `buffer_slice` looks one up for an empty slice).
        let buffer = unsafe { device.bind(&whole, USAGE, slice.as_ptr().addr()) }?;
        Ok(Some(BoundBuffer {
            device,
            buffer,
            size: range.size,
        }))
    }

    /// The device the Blocks are imported into.
    pub fn device(&self) -> &Arc<Device> {
        &self.backend().device
    }
}

/// A buffer bound over one allocation's bytes ([`Registered::bind_buffer`]);
/// destroyed on drop, after the device is idle.
pub struct BoundBuffer<'r> {
    device: &'r Device,
    buffer: vk::Buffer,
    size: u64,
}

impl BoundBuffer<'_> {
    /// The buffer.
    pub fn buffer(&self) -> vk::Buffer {
        self.buffer
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for BoundBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: ours; the device finishes any work that uses it first.
        unsafe {
            let _ = self.device.device.device_wait_idle();
            self.device.device.destroy_buffer(self.buffer, None);
        }
    }
}

impl fmt::Debug for BoundBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundBuffer")
            .field("buffer", &self.buffer)
            .field("size", &self.size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_cause() {
        let no_loader = Error::from(VulkanError::NoLoader {
            reason: "not found".into(),
        });
        assert!(no_loader.to_string().contains("libvulkan1"), "{no_loader}");
        let misaligned = VulkanError::Misaligned {
            address: 0x1001,
            len: 4096,
            alignment: 4096,
        };
        assert!(
            misaligned
                .to_string()
                .contains("minImportedHostPointerAlignment")
        );
    }

    #[test]
    fn no_loader_is_a_typed_error() {
        match Device::open_from("/nonexistent/libvulkan.so.1") {
            Err(Error::Vulkan(VulkanError::NoLoader { reason })) => {
                assert!(reason.contains("nonexistent"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
