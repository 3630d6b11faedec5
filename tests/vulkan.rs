//! A Vulkan device reads and writes collections in imported Blocks, with no
//! copy anywhere: a compute shader writes a `Vec` in a Tape and the CPU
//! reads the results in that same `Vec`; the CPU's writes are read by a
//! second shader; a Heap allocation is read by a shader; memory a Tape
//! commits after the registration is imported and used too; and (with
//! feature `load`) a tensor read from a safetensors file straight into an
//! imported Tape is read by a shader where it landed.
//!
//! CI runs these on Mesa's lavapipe with `UNIMEM_REQUIRE_VULKAN=1`, which
//! makes a missing loader or device a failure; elsewhere they are reported
//! `ignored` with the reason. The shaders are WGSL in `shaders/`, compiled
//! to the SPIR-V committed beside them (`tools/spvgen` checks it is fresh).

mod support;

#[macro_use]
mod harness;

use std::process::Command;
use std::sync::Arc;

use allocator_api2::vec::Vec;
use support::options;
use unimem::vulkan::ash::{self, vk};
use unimem::vulkan::{BufferRange, Device, Registered, VulkanError};
use unimem::{Error, Heap, Node, Tape};

const FILL: &[u8] = include_bytes!("../shaders/fill.spv");
const TRANSFORM: &[u8] = include_bytes!("../shaders/transform.spv");

/// 64 words, aligned to 256 bytes: storage-buffer offsets into imported
/// memory must meet `minStorageBufferOffsetAlignment` (at most 256).
#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Words([u32; 64]);

/// The words of a slice of `Words`.
fn words(v: &[Words]) -> &[u32] {
    // SAFETY: `Words` is 64 u32s with no padding (256 bytes, align 256).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 64) }
}

fn words_mut(v: &mut [Words]) -> &mut [u32] {
    // SAFETY: as `words`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 64) }
}

/// The device; where there is none the test is skipped, or fails with
/// `UNIMEM_REQUIRE_VULKAN` set (CI sets it).
fn device() -> Arc<Device> {
    let device = harness::component(
        "UNIMEM_REQUIRE_VULKAN",
        "needs a Vulkan device",
        Device::open(),
    );
    println!("on {}", device.name());
    device
}

/// Runs a compute shader once over `buffers` (bindings 0, 1, ...) and waits
/// for it; what it wrote is visible to the host afterwards.
fn dispatch(device: &Device, spirv: &[u8], buffers: &[BufferRange], groups: u32) {
    let d = device.device();
    let (family, queue) = device.queue();
    let code = unimem::vulkan::ash::util::read_spv(&mut std::io::Cursor::new(spirv)).unwrap();
    // SAFETY: plain creation and submission calls on live objects; every
    // object made here is destroyed before returning, after the fence.
    unsafe {
        let module = d
            .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&code), None)
            .unwrap();
        let bindings: std::vec::Vec<_> = (0..buffers.len() as u32)
            .map(|i| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(i)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_layout = d
            .create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                None,
            )
            .unwrap();
        let layouts = [set_layout];
        let layout = d
            .create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts),
                None,
            )
            .unwrap();
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let pipeline = d
            .create_compute_pipelines(
                vk::PipelineCache::null(),
                &[vk::ComputePipelineCreateInfo::default()
                    .stage(stage)
                    .layout(layout)],
                None,
            )
            .map_err(|(_, e)| e)
            .unwrap()[0];
        let sizes = [vk::DescriptorPoolSize {
            ty: vk::DescriptorType::STORAGE_BUFFER,
            descriptor_count: buffers.len() as u32,
        }];
        let pool = d
            .create_descriptor_pool(
                &vk::DescriptorPoolCreateInfo::default()
                    .max_sets(1)
                    .pool_sizes(&sizes),
                None,
            )
            .unwrap();
        let set = d
            .allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(pool)
                    .set_layouts(&layouts),
            )
            .unwrap()[0];
        let infos: std::vec::Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .iter()
            .map(|b| {
                [vk::DescriptorBufferInfo {
                    buffer: b.buffer,
                    offset: b.offset,
                    range: b.size,
                }]
            })
            .collect();
        let writes: std::vec::Vec<_> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        d.update_descriptor_sets(&writes, &[]);
        let commands = d
            .create_command_pool(
                &vk::CommandPoolCreateInfo::default().queue_family_index(family),
                None,
            )
            .unwrap();
        let cb = d
            .allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(commands)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1),
            )
            .unwrap()[0];
        d.begin_command_buffer(
            cb,
            &vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
        )
        .unwrap();
        d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline);
        d.cmd_bind_descriptor_sets(cb, vk::PipelineBindPoint::COMPUTE, layout, 0, &[set], &[]);
        d.cmd_dispatch(cb, groups, 1, 1);
        // The shader's writes, made visible to the host's reads.
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::COMPUTE_SHADER,
            vk::PipelineStageFlags::HOST,
            vk::DependencyFlags::empty(),
            &[barrier],
            &[],
            &[],
        );
        d.end_command_buffer(cb).unwrap();
        let fence = d
            .create_fence(&vk::FenceCreateInfo::default(), None)
            .unwrap();
        let submits = [vk::SubmitInfo::default().command_buffers(std::slice::from_ref(&cb))];
        d.queue_submit(queue, &submits, fence).unwrap();
        d.wait_for_fences(&[fence], true, u64::MAX).unwrap();
        d.destroy_fence(fence, None);
        d.destroy_command_pool(commands, None);
        d.destroy_descriptor_pool(pool, None);
        d.destroy_pipeline(pipeline, None);
        d.destroy_pipeline_layout(layout, None);
        d.destroy_descriptor_set_layout(set_layout, None);
        d.destroy_shader_module(module, None);
    }
}

fn shaders_write_and_read_a_vec_in_a_registered_tape() {
    let device = device();
    let tape = Registered::new(&device, Tape::open_with(16 << 20, &options()).unwrap()).unwrap();
    let n = 16384; // Words: 1 Mi u32s, 4 MiB
    let mut out: Vec<Words, _> = Vec::with_capacity_in(n, &*tape);
    out.resize(n, Words([0; 64]));
    let range = tape
        .buffer_slice(&out)
        .expect("the Vec is in an imported part");
    dispatch(&device, FILL, &[range], (n * 64 / 64) as u32);
    // The shader wrote the Vec's own pages: read them in place.
    let values = words(&out);
    assert!(
        values
            .iter()
            .enumerate()
            .all(|(i, &w)| w == i as u32 * 2 + 1),
        "what the shader wrote"
    );

    // The CPU writes; a second shader reads those very bytes.
    words_mut(&mut out)
        .iter_mut()
        .enumerate()
        .for_each(|(i, w)| *w = i as u32 % 1000);
    let mut dst: Vec<Words, _> = Vec::with_capacity_in(n, &*tape);
    dst.resize(n, Words([0; 64]));
    let mut total: Vec<Words, _> = Vec::with_capacity_in(1, &*tape);
    total.push(Words([0; 64]));
    let src = tape.buffer_slice(&out).unwrap();
    let to = tape.buffer_slice(&dst).unwrap();
    let sum = tape.buffer_slice(&total).unwrap();
    dispatch(&device, TRANSFORM, &[src, to, sum], (n * 64 / 64) as u32);
    let read = words(&out);
    assert!(
        words(&dst).iter().zip(read).all(|(&d, &s)| d == s * 3 + 7),
        "the shader read what the CPU wrote"
    );
    let expected: u64 = read.iter().map(|&w| u64::from(w)).sum();
    assert_eq!(u64::from(words(&total)[0]), expected % (1 << 32));
    assert_eq!(
        tape.buffer_slice(&out).unwrap().buffer,
        range.buffer,
        "one import"
    );
}

fn a_shader_reads_a_heap_allocation() {
    let device = device();
    let heap = Heap::lazy_with(16 << 20, options()).open_now().unwrap();
    // Commit what the test uses before registering: a Heap grows in steps,
    // and an allocation across two steps has no single buffer.
    let warm: Vec<u8, _> = Vec::with_capacity_in(6 << 20, &heap);
    drop(warm);
    let heap = Registered::new(&device, heap).unwrap();
    let n = 4096;
    let mut src: Vec<Words, _> = Vec::with_capacity_in(n, &*heap);
    for i in 0..n {
        let mut w = Words([0; 64]);
        for (j, x) in w.0.iter_mut().enumerate() {
            *x = (i * 64 + j) as u32;
        }
        src.push(w);
    }
    let mut dst: Vec<Words, _> = Vec::with_capacity_in(n, &*heap);
    dst.resize(n, Words([0; 64]));
    let mut total: Vec<Words, _> = Vec::with_capacity_in(1, &*heap);
    total.push(Words([0; 64]));
    let ranges = [&src[..], &dst[..], &total[..]]
        .map(|v| heap.buffer_slice(v).expect("in an imported part"));
    dispatch(&device, TRANSFORM, &ranges, (n * 64 / 64) as u32);
    assert!(
        words(&dst)
            .iter()
            .enumerate()
            .all(|(i, &d)| d == i as u32 * 3 + 7)
    );
    let expected: u64 = (0..(n * 64) as u64).sum();
    assert_eq!(u64::from(words(&total)[0]), expected % (1 << 32));
}

fn memory_committed_after_registering_is_imported_and_used() {
    let device = device();
    let tape = Tape::open_with(2 << 20, &options().capacity(64 << 20)).unwrap();
    let tape = Registered::new(&device, tape).unwrap();
    assert_eq!(tape.chunks(), 1);
    // Cross the first commit: the next step is imported as it is committed.
    tape.take(3 << 20, 4096).unwrap();
    assert_eq!(tape.chunks(), 2, "the second commit was imported");
    let mut out: Vec<Words, _> = Vec::with_capacity_in(1024, &*tape);
    out.resize(1024, Words([0; 64]));
    let range = tape
        .buffer_slice(&out)
        .expect("inside the part committed later");
    dispatch(&device, FILL, &[range], 1024);
    assert!(
        words(&out)
            .iter()
            .enumerate()
            .all(|(i, &w)| w == i as u32 * 2 + 1)
    );
    // A slice across the two parts has no single buffer.
    let block = tape.block();
    let across = block.as_ptr().wrapping_add((2 << 20) - 64);
    assert!(tape.buffer_range(across, 128).is_none());
    // Imported and registered: the Tape keeps its pages.
    assert!(block.committed() >= 4 << 20);
}

fn a_buffer_bound_over_one_allocation() {
    let device = device();
    let tape = Registered::new(&device, Tape::open_with(1 << 20, &options()).unwrap()).unwrap();
    let _pad: Vec<Words, _> = Vec::with_capacity_in(3, &*tape);
    let mut out: Vec<Words, _> = Vec::with_capacity_in(16, &*tape);
    out.resize(16, Words([7; 64]));
    let bound = tape
        .bind_buffer(&out)
        .unwrap()
        .expect("in an imported part");
    assert_eq!(bound.size(), 16 * 256);
    let whole = BufferRange {
        buffer: bound.buffer(),
        memory: vk::DeviceMemory::null(),
        offset: 0,
        size: bound.size(),
    };
    dispatch(&device, FILL, &[whole], 16);
    assert!(
        words(&out)
            .iter()
            .enumerate()
            .all(|(i, &w)| w == i as u32 * 2 + 1)
    );
    drop(bound);
    // Memory outside every import has no buffer.
    let elsewhere = [Words([0; 64])];
    assert!(tape.buffer_slice(&elsewhere).is_none());
    assert!(tape.bind_buffer(&elsewhere).unwrap().is_none());
}

/// A checkpoint loaded into an imported Tape: the reader writes the
/// imported pages themselves (directly, where the file system allows), and
/// a shader reads a tensor where it landed.
#[cfg(feature = "load")]
fn a_shader_reads_a_loaded_tensor_in_place() {
    use std::io::Write;
    use unimem::load::{Checkpoint, Reader};

    let device = device();
    // A file with a small tensor before the one the shader reads, the
    // header padded so that the one the shader reads starts at a multiple
    // of 512 in the file: it then lands by DMA straight into the imported
    // pages on any storage (512 is the largest memory alignment direct I/O
    // asks of it on common disks).
    let n = 64 * 1024;
    let values: std::vec::Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % 100_000)
        .collect();
    let json = format!(
        "{{\"bias\":{{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}},\
         \"x\":{{\"dtype\":\"U32\",\"shape\":[256,{}],\"data_offsets\":[12,{}]}}}}",
        n / 256,
        12 + 4 * n
    );
    let mut json = json.into_bytes();
    while (8 + json.len() + 12) % 512 != 0 {
        json.push(b' ');
    }
    let dir = std::env::temp_dir().join(format!("unimem-vulkan-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    file.write_all(&json).unwrap();
    file.write_all(&[0u8; 12]).unwrap();
    for v in &values {
        file.write_all(&v.to_le_bytes()).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);

    let tape = Registered::new(&device, Tape::open_with(8 << 20, &options()).unwrap()).unwrap();
    let mut checkpoint = Checkpoint::open(&path).unwrap();
    // Storage-buffer offsets into imported memory must meet
    // minStorageBufferOffsetAlignment (at most 256).
    checkpoint.set_align(256).unwrap();
    // Cold, so that the reader reads directly where the file system allows.
    for (source, _) in checkpoint.files() {
        source.drop_cached().unwrap();
    }
    let tensors = checkpoint.load(&Reader::new(), &tape).unwrap();
    let x = tensors.tensor("x").unwrap().as_u32().unwrap();
    assert_eq!(x, &values[..]);
    let src = tape
        .buffer_slice(x)
        .expect("the tensor is in an imported part");
    let mut dst: Vec<Words, _> = Vec::with_capacity_in(n / 64, &*tape);
    dst.resize(n / 64, Words([0; 64]));
    let mut total: Vec<Words, _> = Vec::with_capacity_in(1, &*tape);
    total.push(Words([0; 64]));
    let to = tape.buffer_slice(&dst).unwrap();
    let sum = tape.buffer_slice(&total).unwrap();
    dispatch(&device, TRANSFORM, &[src, to, sum], (n / 64) as u32);
    assert!(
        words(&dst).iter().zip(x).all(|(&d, &s)| d == s * 3 + 7),
        "the shader read the tensor where it landed"
    );
    let expected: u64 = values.iter().map(|&v| u64::from(v)).sum();
    assert_eq!(u64::from(words(&total)[0]), expected % (1 << 32));
    println!(
        "loaded {} bytes ({:?}, direct {} B, copied {} B) and read them on the device",
        tensors.report().bytes,
        tensors.report().engine,
        tensors.report().direct,
        tensors.report().copied
    );
    drop(tensors);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without a driver (an ICD list that names none), opening is a typed error.
fn no_device_is_a_typed_error() {
    if std::env::var_os("UNIMEM_VULKAN_CHILD").is_some() {
        match Device::open() {
            Err(Error::Vulkan(VulkanError::NoDevice)) => println!("child saw NoDevice"),
            Err(Error::Vulkan(VulkanError::NoLoader { .. })) => println!("child saw NoLoader"),
            other => panic!("expected no device, got {other:?}"),
        }
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_device_is_a_typed_error", "--nocapture"])
        .env("UNIMEM_VULKAN_CHILD", "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("child saw No"), "{text}");
}

fn the_devices_node_comes_from_its_pci_address() {
    let device = device();
    // SAFETY: the device's own live handles; a query.
    let offered = unsafe {
        device
            .instance()
            .enumerate_device_extension_properties(device.physical())
    }
    .unwrap()
    .iter()
    .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::pci_bus_info::NAME));
    match (offered, Node::near_vulkan(&device)) {
        (true, Ok(node)) => {
            let address = device.pci_address().unwrap();
            println!("{} at PCI {address}: NUMA {node:?}", device.name());
            assert_eq!(node, Node::near_pci(&address).unwrap());
        }
        (false, Err(Error::Vulkan(VulkanError::MissingExtension { extension }))) => {
            assert_eq!(extension, "VK_EXT_pci_bus_info");
            assert_eq!(device.pci_address(), None);
            println!(
                "{} offers no VK_EXT_pci_bus_info: no PCI address",
                device.name()
            );
        }
        (offered, other) => panic!("VK_EXT_pci_bus_info offered: {offered}, yet {other:?}"),
    }
}

fn main() {
    harness::main(&[
        test!(shaders_write_and_read_a_vec_in_a_registered_tape),
        test!(a_shader_reads_a_heap_allocation),
        test!(memory_committed_after_registering_is_imported_and_used),
        test!(a_buffer_bound_over_one_allocation),
        test!(no_device_is_a_typed_error),
        test!(the_devices_node_comes_from_its_pci_address),
        #[cfg(feature = "load")]
        test!(a_shader_reads_a_loaded_tensor_in_place),
    ]);
}
