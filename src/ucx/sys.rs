//! The part of UCP (`ucp/api/ucp.h`, UCX 1.13) this module calls, declared
//! by hand.
//!
//! Hand-written rather than generated or taken from a crate: the published
//! Rust UCX bindings (`ucx1-sys` and the crates built on it) bundle and build
//! their own, older copy of UCX and do not build against the system's
//! library, and bindgen would need libclang at build time for two dozen
//! declarations. What is declared here was checked against the 1.13 headers
//! by hand, and is checked again on every `--features ucx` build:
//! `layout.c`, compiled by `build.rs` against the installed headers, records
//! the size, alignment and field offsets of every struct and the value of
//! every constant below, and `tests::layout_matches_headers` compares them
//! one by one.
//!
//! `build.rs` links `libucp` (and the `libucs` it needs) as `pkg-config ucx`
//! says.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `ucs_status_t`: a packed enum (`UCS_S_PACKED`), one signed byte. Read as a
/// C `int` it would carry garbage in its upper bits.
pub type ucs_status_t = i8;
pub const UCS_OK: ucs_status_t = 0;
pub const UCS_INPROGRESS: ucs_status_t = 1;
pub const UCS_ERR_UNREACHABLE: ucs_status_t = -6;
pub const UCS_ERR_LAST: ucs_status_t = -100;

/// `ucs_status_ptr_t`: null when the operation completed at once, a status
/// cast to a pointer when it failed, else a request handle.
pub type ucs_status_ptr_t = *mut c_void;

/// `UCS_PTR_IS_ERR`: `(uintptr_t)p >= (uintptr_t)UCS_ERR_LAST`.
pub fn ptr_is_err(p: ucs_status_ptr_t) -> bool {
    p.addr() >= UCS_ERR_LAST as isize as usize
}

/// `UCS_PTR_RAW_STATUS`: `(ucs_status_t)(intptr_t)p`.
pub fn ptr_raw_status(p: ucs_status_ptr_t) -> ucs_status_t {
    p.addr() as isize as ucs_status_t
}

/// An opaque UCX object, only ever behind a pointer.
macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}
opaque!(
    ucp_config,
    ucp_context,
    ucp_worker,
    ucp_ep,
    ucp_mem,
    ucp_rkey,
    ucp_address
);

pub type ucp_config_t = ucp_config;
pub type ucp_context_h = *mut ucp_context;
pub type ucp_worker_h = *mut ucp_worker;
pub type ucp_ep_h = *mut ucp_ep;
pub type ucp_mem_h = *mut ucp_mem;
pub type ucp_rkey_h = *mut ucp_rkey;
pub type ucp_address_t = ucp_address;

/// The API version these declarations follow (`ucp_version.h`).
pub const UCP_API_MAJOR: c_uint = 1;
pub const UCP_API_MINOR: c_uint = 13;

pub const UCP_PARAM_FIELD_FEATURES: u64 = 1 << 0;
pub const UCP_PARAM_FIELD_MT_WORKERS_SHARED: u64 = 1 << 5;
pub const UCP_PARAM_FIELD_NAME: u64 = 1 << 8;
pub const UCP_FEATURE_RMA: u64 = 1 << 1;

/// `ucp_params_t`.
#[repr(C)]
pub struct ucp_params_t {
    pub field_mask: u64,
    pub features: u64,
    pub request_size: usize,
    pub request_init: Option<unsafe extern "C" fn(request: *mut c_void)>,
    pub request_cleanup: Option<unsafe extern "C" fn(request: *mut c_void)>,
    pub tag_sender_mask: u64,
    pub mt_workers_shared: c_int,
    pub estimated_num_eps: usize,
    pub estimated_num_ppn: usize,
    pub name: *const c_char,
}

/// `ucs_thread_mode_t`, an `int`-sized enum.
pub type ucs_thread_mode_t = c_uint;
pub const UCS_THREAD_MODE_SERIALIZED: ucs_thread_mode_t = 1;
pub const UCP_WORKER_PARAM_FIELD_THREAD_MODE: u64 = 1 << 0;

/// `ucs_cpu_set_t`: `UCS_CPU_SETSIZE` (1024) bits.
#[repr(C)]
pub struct ucs_cpu_set_t {
    pub ucs_bits: [u64; 16],
}

/// `ucp_worker_params_t`.
#[repr(C)]
pub struct ucp_worker_params_t {
    pub field_mask: u64,
    pub thread_mode: ucs_thread_mode_t,
    pub cpu_mask: ucs_cpu_set_t,
    pub events: c_uint,
    pub user_data: *mut c_void,
    pub event_fd: c_int,
    pub flags: u64,
    pub name: *const c_char,
    pub am_alignment: usize,
    pub client_id: u64,
}

/// `ucp_err_handling_mode_t`, an `int`-sized enum.
pub type ucp_err_handling_mode_t = c_uint;
pub const UCP_ERR_HANDLING_MODE_NONE: ucp_err_handling_mode_t = 0;
pub const UCP_ERR_HANDLING_MODE_PEER: ucp_err_handling_mode_t = 1;

pub const UCP_EP_PARAM_FIELD_REMOTE_ADDRESS: u64 = 1 << 0;
pub const UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE: u64 = 1 << 1;
pub const UCP_EP_PARAM_FIELD_ERR_HANDLER: u64 = 1 << 2;
pub const UCP_EP_PARAM_FIELD_NAME: u64 = 1 << 7;

/// `ucp_err_handler_cb_t`.
pub type ucp_err_handler_cb_t =
    Option<unsafe extern "C" fn(arg: *mut c_void, ep: ucp_ep_h, status: ucs_status_t)>;

/// `ucp_err_handler_t`.
#[repr(C)]
pub struct ucp_err_handler_t {
    pub cb: ucp_err_handler_cb_t,
    pub arg: *mut c_void,
}

/// `ucs_sock_addr_t`.
#[repr(C)]
pub struct ucs_sock_addr_t {
    pub addr: *const c_void,
    pub addrlen: libc::socklen_t,
}

/// `ucp_ep_params_t`.
#[repr(C)]
pub struct ucp_ep_params_t {
    pub field_mask: u64,
    pub address: *const ucp_address_t,
    pub err_mode: ucp_err_handling_mode_t,
    pub err_handler: ucp_err_handler_t,
    pub user_data: *mut c_void,
    pub flags: c_uint,
    pub sockaddr: ucs_sock_addr_t,
    pub conn_request: *mut c_void,
    pub name: *const c_char,
    pub local_sockaddr: ucs_sock_addr_t,
}

/// `ucp_ep_close_flags_t`: close at once, completing outstanding operations
/// with `UCS_ERR_CANCELED` (peer error handling mode only).
pub const UCP_EP_CLOSE_FLAG_FORCE: u32 = 1 << 0;

/// `ucs_memory_type_t`, an `int`-sized enum.
pub type ucs_memory_type_t = c_uint;
pub const UCS_MEMORY_TYPE_HOST: ucs_memory_type_t = 0;

pub const UCP_MEM_MAP_PARAM_FIELD_ADDRESS: u64 = 1 << 0;
pub const UCP_MEM_MAP_PARAM_FIELD_LENGTH: u64 = 1 << 1;
pub const UCP_MEM_MAP_PARAM_FIELD_FLAGS: u64 = 1 << 2;
pub const UCP_MEM_MAP_PARAM_FIELD_PROT: u64 = 1 << 3;
pub const UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE: u64 = 1 << 4;
pub const UCP_MEM_MAP_PROT_LOCAL_READ: c_uint = 1 << 0;
pub const UCP_MEM_MAP_PROT_LOCAL_WRITE: c_uint = 1 << 1;
pub const UCP_MEM_MAP_PROT_REMOTE_READ: c_uint = 1 << 8;
pub const UCP_MEM_MAP_PROT_REMOTE_WRITE: c_uint = 1 << 9;

/// `ucp_mem_map_params_t`.
#[repr(C)]
pub struct ucp_mem_map_params_t {
    pub field_mask: u64,
    pub address: *mut c_void,
    pub length: usize,
    pub flags: c_uint,
    pub prot: c_uint,
    pub memory_type: ucs_memory_type_t,
}

pub const UCP_OP_ATTR_FIELD_FLAGS: u32 = 1 << 4;
pub const UCP_OP_ATTR_FIELD_MEMH: u32 = 1 << 8;

/// `ucp_datatype_t`.
pub type ucp_datatype_t = u64;

/// `ucp_send_nbx_callback_t`.
pub type ucp_send_nbx_callback_t = Option<
    unsafe extern "C" fn(request: *mut c_void, status: ucs_status_t, user_data: *mut c_void),
>;

/// The `cb` union of `ucp_request_param_t`: four callback pointers, of which
/// only `send` is named here (this module sets none).
#[repr(C)]
#[derive(Clone, Copy)]
pub union ucp_request_param_cb {
    pub send: ucp_send_nbx_callback_t,
    pub other: *mut c_void,
}

/// The `recv_info` union of `ucp_request_param_t`: two pointers.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ucp_request_param_recv_info {
    pub length: *mut usize,
    pub tag_info: *mut c_void,
}

/// `ucp_request_param_t`.
#[repr(C)]
pub struct ucp_request_param_t {
    pub op_attr_mask: u32,
    pub flags: u32,
    pub request: *mut c_void,
    pub cb: ucp_request_param_cb,
    pub datatype: ucp_datatype_t,
    pub user_data: *mut c_void,
    pub reply_buffer: *mut c_void,
    pub memory_type: ucs_memory_type_t,
    pub recv_info: ucp_request_param_recv_info,
    pub memh: ucp_mem_h,
}

/// The parameter structs are plain data whose "nothing set" state is all
/// zero bytes: `field_mask` 0, null pointers, no callbacks.
macro_rules! zeroed_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // SAFETY: every field is an integer, a raw pointer, an
                // `Option` of a function pointer, or an array or union of
                // those; all-zero bytes are a valid value of each.
                unsafe { core::mem::zeroed() }
            }
        }
    )*};
}
zeroed_default!(
    ucp_params_t,
    ucp_worker_params_t,
    ucp_ep_params_t,
    ucp_mem_map_params_t,
    ucp_request_param_t
);

unsafe extern "C" {
    pub fn ucp_config_read(
        env_prefix: *const c_char,
        filename: *const c_char,
        config_p: *mut *mut ucp_config_t,
    ) -> ucs_status_t;
    pub fn ucp_config_release(config: *mut ucp_config_t);
    pub fn ucp_config_modify(
        config: *mut ucp_config_t,
        name: *const c_char,
        value: *const c_char,
    ) -> ucs_status_t;
    pub fn ucp_get_version_string() -> *const c_char;
    /// `ucp_init` is a `static inline` in `ucp.h` that calls this with
    /// `UCP_API_MAJOR, UCP_API_MINOR`; the library has no `ucp_init` symbol.
    pub fn ucp_init_version(
        api_major_version: c_uint,
        api_minor_version: c_uint,
        params: *const ucp_params_t,
        config: *const ucp_config_t,
        context_p: *mut ucp_context_h,
    ) -> ucs_status_t;
    pub fn ucp_cleanup(context: ucp_context_h);

    pub fn ucp_worker_create(
        context: ucp_context_h,
        params: *const ucp_worker_params_t,
        worker_p: *mut ucp_worker_h,
    ) -> ucs_status_t;
    pub fn ucp_worker_destroy(worker: ucp_worker_h);
    pub fn ucp_worker_get_address(
        worker: ucp_worker_h,
        address_p: *mut *mut ucp_address_t,
        address_length_p: *mut usize,
    ) -> ucs_status_t;
    pub fn ucp_worker_release_address(worker: ucp_worker_h, address: *mut ucp_address_t);
    pub fn ucp_worker_progress(worker: ucp_worker_h) -> c_uint;
    pub fn ucp_worker_fence(worker: ucp_worker_h) -> ucs_status_t;

    pub fn ucp_ep_create(
        worker: ucp_worker_h,
        params: *const ucp_ep_params_t,
        ep_p: *mut ucp_ep_h,
    ) -> ucs_status_t;
    pub fn ucp_ep_close_nbx(ep: ucp_ep_h, param: *const ucp_request_param_t) -> ucs_status_ptr_t;
    pub fn ucp_ep_flush_nbx(ep: ucp_ep_h, param: *const ucp_request_param_t) -> ucs_status_ptr_t;

    pub fn ucp_mem_map(
        context: ucp_context_h,
        params: *const ucp_mem_map_params_t,
        memh_p: *mut ucp_mem_h,
    ) -> ucs_status_t;
    pub fn ucp_mem_unmap(context: ucp_context_h, memh: ucp_mem_h) -> ucs_status_t;
    pub fn ucp_rkey_pack(
        context: ucp_context_h,
        memh: ucp_mem_h,
        rkey_buffer_p: *mut *mut c_void,
        size_p: *mut usize,
    ) -> ucs_status_t;
    pub fn ucp_rkey_buffer_release(rkey_buffer: *mut c_void);
    pub fn ucp_ep_rkey_unpack(
        ep: ucp_ep_h,
        rkey_buffer: *const c_void,
        rkey_p: *mut ucp_rkey_h,
    ) -> ucs_status_t;
    pub fn ucp_rkey_destroy(rkey: ucp_rkey_h);

    pub fn ucp_put_nbx(
        ep: ucp_ep_h,
        buffer: *const c_void,
        count: usize,
        remote_addr: u64,
        rkey: ucp_rkey_h,
        param: *const ucp_request_param_t,
    ) -> ucs_status_ptr_t;
    pub fn ucp_get_nbx(
        ep: ucp_ep_h,
        buffer: *mut c_void,
        count: usize,
        remote_addr: u64,
        rkey: ucp_rkey_h,
        param: *const ucp_request_param_t,
    ) -> ucs_status_ptr_t;
    pub fn ucp_request_check_status(request: *mut c_void) -> ucs_status_t;
    pub fn ucp_request_free(request: *mut c_void);

    pub fn ucs_status_string(status: ucs_status_t) -> *const c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use std::collections::HashMap;
    use std::ffi::CStr;

    /// One entry of `layout.c`'s table.
    #[repr(C)]
    struct Entry {
        name: *const c_char,
        value: u64,
    }

    unsafe extern "C" {
        static unimem_ucx_layout: [Entry; 0];
        static unimem_ucx_layout_len: usize;
    }

    /// What the C compiler said, by name.
    fn headers() -> HashMap<String, u64> {
        // SAFETY: `layout.c` defines `unimem_ucx_layout` as a constant array
        // of `unimem_ucx_layout_len` entries `{ const char *, uint64_t }`,
        // each name a string literal.
        unsafe {
            let entries = unimem_ucx_layout.as_ptr();
            (0..unimem_ucx_layout_len)
                .map(|i| {
                    let entry = &*entries.add(i);
                    let name = CStr::from_ptr(entry.name).to_str().unwrap();
                    (name.to_owned(), entry.value)
                })
                .collect()
        }
    }

    #[test]
    fn layout_matches_headers() {
        let mut rust: Vec<(String, u64)> = Vec::new();
        macro_rules! layout {
            ($t:ident: $($field:ident),*) => {
                rust.push((concat!("sizeof ", stringify!($t)).into(), size_of::<$t>() as u64));
                rust.push((concat!("alignof ", stringify!($t)).into(), align_of::<$t>() as u64));
                $(rust.push((
                    concat!(stringify!($t), ".", stringify!($field)).into(),
                    offset_of!($t, $field) as u64,
                ));)*
            };
        }
        macro_rules! constants {
            ($($k:ident),*) => {$(rust.push((stringify!($k).into(), $k as i64 as u64));)*};
        }
        layout!(ucp_params_t: field_mask, features, request_size, request_init,
            request_cleanup, tag_sender_mask, mt_workers_shared, estimated_num_eps,
            estimated_num_ppn, name);
        layout!(ucs_cpu_set_t: ucs_bits);
        layout!(ucp_worker_params_t: field_mask, thread_mode, cpu_mask, events, user_data,
            event_fd, flags, name, am_alignment, client_id);
        layout!(ucp_err_handler_t: cb, arg);
        layout!(ucs_sock_addr_t: addr, addrlen);
        layout!(ucp_ep_params_t: field_mask, address, err_mode, err_handler, user_data,
            flags, sockaddr, conn_request, name, local_sockaddr);
        layout!(ucp_mem_map_params_t: field_mask, address, length, flags, prot, memory_type);
        layout!(ucp_request_param_t: op_attr_mask, flags, request, cb, datatype, user_data,
            reply_buffer, memory_type, recv_info, memh);
        constants!(
            UCS_OK,
            UCS_INPROGRESS,
            UCS_ERR_UNREACHABLE,
            UCS_ERR_LAST,
            UCP_API_MAJOR,
            UCP_API_MINOR,
            UCP_PARAM_FIELD_FEATURES,
            UCP_PARAM_FIELD_MT_WORKERS_SHARED,
            UCP_PARAM_FIELD_NAME,
            UCP_FEATURE_RMA,
            UCS_THREAD_MODE_SERIALIZED,
            UCP_WORKER_PARAM_FIELD_THREAD_MODE,
            UCP_ERR_HANDLING_MODE_NONE,
            UCP_ERR_HANDLING_MODE_PEER,
            UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
            UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
            UCP_EP_PARAM_FIELD_ERR_HANDLER,
            UCP_EP_PARAM_FIELD_NAME,
            UCP_EP_CLOSE_FLAG_FORCE,
            UCS_MEMORY_TYPE_HOST,
            UCP_MEM_MAP_PARAM_FIELD_ADDRESS,
            UCP_MEM_MAP_PARAM_FIELD_LENGTH,
            UCP_MEM_MAP_PARAM_FIELD_FLAGS,
            UCP_MEM_MAP_PARAM_FIELD_PROT,
            UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE,
            UCP_MEM_MAP_PROT_LOCAL_READ,
            UCP_MEM_MAP_PROT_LOCAL_WRITE,
            UCP_MEM_MAP_PROT_REMOTE_READ,
            UCP_MEM_MAP_PROT_REMOTE_WRITE,
            UCP_OP_ATTR_FIELD_FLAGS,
            UCP_OP_ATTR_FIELD_MEMH
        );
        rust.push((
            "sizeof ucs_status_t".into(),
            size_of::<ucs_status_t>() as u64,
        ));
        rust.push((
            "sizeof ucs_memory_type_t".into(),
            size_of::<ucs_memory_type_t>() as u64,
        ));
        rust.push((
            "sizeof ucs_thread_mode_t".into(),
            size_of::<ucs_thread_mode_t>() as u64,
        ));
        rust.push((
            "sizeof ucp_err_handling_mode_t".into(),
            size_of::<ucp_err_handling_mode_t>() as u64,
        ));
        rust.push((
            "sizeof ucp_datatype_t".into(),
            size_of::<ucp_datatype_t>() as u64,
        ));

        let headers = headers();
        let mut wrong = Vec::new();
        for (name, value) in &rust {
            match headers.get(name) {
                Some(c) if c == value => {}
                Some(c) => wrong.push(format!("{name}: {value} here, {c} in the headers")),
                None => wrong.push(format!("{name}: not recorded by layout.c")),
            }
        }
        assert_eq!(rust.len(), headers.len(), "layout.c records other items");
        assert!(
            wrong.is_empty(),
            "the declarations differ from the UCX headers:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn status_pointers_decode_as_the_macros_do() {
        let request = core::ptr::without_provenance_mut::<c_void>(0x7f00_0000_1000);
        let failed = core::ptr::without_provenance_mut::<c_void>(-6isize as usize);
        assert!(!ptr_is_err(request));
        assert!(ptr_is_err(failed));
        assert!(!ptr_is_err(core::ptr::null_mut()));
        assert_eq!(ptr_raw_status(failed), UCS_ERR_UNREACHABLE);
        // SAFETY: ucs_status_string returns a static string for any status.
        let text = unsafe { CStr::from_ptr(ucs_status_string(UCS_ERR_UNREACHABLE)) };
        assert_eq!(text.to_str().unwrap(), "Destination is unreachable");
    }
}
