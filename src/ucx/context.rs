//! [`Context`]: one UCP context, shared by the registrations and workers
//! made from it.

use core::fmt;
use core::ptr;
use std::ffi::{CStr, CString};
use std::sync::Arc;

use super::error::check;
use super::sys;
use super::worker::Worker;
use crate::Error;

/// A UCP context (`ucp_init`) with remote memory access: what memory is
/// registered with ([`Registered`](super::Registered)) and workers are made
/// from ([`Context::worker`]).
///
/// Cheap to clone (a reference count); the context is cleaned up when the
/// last clone, registration and worker are gone. It reads UCX's settings
/// from the environment when made (`UCX_TLS` chooses the transports: `tcp`,
/// `posix,sysv,cma`, `rc`...; `UCX_NET_DEVICES` the network devices), or
/// takes them from [`Context::with_settings`].
#[derive(Clone)]
pub struct Context {
    inner: Arc<Handle>,
}

/// The context handle, cleaned up on drop.
struct Handle(sys::ucp_context_h);

// SAFETY: the context is created with `mt_workers_shared`, which makes UCP
// guard it with a lock for use from several threads; the calls made on it
// from here (`ucp_mem_map`, `ucp_mem_unmap`, `ucp_rkey_pack`,
// `ucp_worker_create`) take that lock.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: every worker and registration holds a clone of the `Arc`
        // around this handle, so none is left.
        unsafe { sys::ucp_cleanup(self.0) }
    }
}

impl Context {
    /// Initializes UCP for remote memory access (`UCP_FEATURE_RMA`), with
    /// the settings in the environment.
    pub fn new() -> Result<Context, Error> {
        Context::with_settings(&[])
    }

    /// As [`Context::new`], with `settings` (name and value, the name
    /// without its `UCX_` prefix: `("TLS", "tcp")`, `("NET_DEVICES", "lo")`)
    /// over those of the environment (`ucp_config_modify`).
    ///
    /// Errors: a name or value with a NUL byte ([`Error::InvalidArgument`]),
    /// and what UCX says of a setting it does not know or a value it does
    /// not take.
    pub fn with_settings(settings: &[(&str, &str)]) -> Result<Context, Error> {
        let settings = settings
            .iter()
            .map(|&(name, value)| Ok((CString::new(name)?, CString::new(value)?)))
            .collect::<Result<Vec<_>, std::ffi::NulError>>()
            .map_err(|_| Error::InvalidArgument {
                reason: "a UCX setting with a NUL byte",
            })?;
        let mut config = ptr::null_mut();
        // SAFETY: null prefix and file: read the `UCX_` environment; the
        // out-pointer is valid.
        let status = unsafe { sys::ucp_config_read(ptr::null(), ptr::null(), &mut config) };
        check("ucp_config_read", status)?;
        let made = Context::init(config, &settings);
        // SAFETY: read above, released once; only `init` used it.
        unsafe { sys::ucp_config_release(config) };
        made
    }

    /// Applies `settings` to `config` and initializes UCP with it.
    fn init(
        config: *mut sys::ucp_config_t,
        settings: &[(CString, CString)],
    ) -> Result<Context, Error> {
        for (name, value) in settings {
            // SAFETY: a live configuration and two NUL-terminated strings.
            let status = unsafe { sys::ucp_config_modify(config, name.as_ptr(), value.as_ptr()) };
            check("ucp_config_modify", status)?;
        }
        let params = sys::ucp_params_t {
            field_mask: sys::UCP_PARAM_FIELD_FEATURES
                | sys::UCP_PARAM_FIELD_MT_WORKERS_SHARED
                | sys::UCP_PARAM_FIELD_NAME,
            features: sys::UCP_FEATURE_RMA,
            mt_workers_shared: 1,
            name: c"unimem".as_ptr(),
            ..Default::default()
        };
        let mut handle = ptr::null_mut();
        // SAFETY: `params` and `config` are valid for the call (`ucp_init`
        // is an inline wrapper of exactly this call); the out-pointer is valid.
        let status = unsafe {
            sys::ucp_init_version(
                sys::UCP_API_MAJOR,
                sys::UCP_API_MINOR,
                &params,
                config,
                &mut handle,
            )
        };
        check("ucp_init", status)?;
        Ok(Context {
            inner: Arc::new(Handle(handle)),
        })
    }

    /// A worker on this context: what connects to peers and progresses
    /// their operations.
    pub fn worker(&self) -> Result<Worker, Error> {
        Worker::new(self)
    }

    /// The UCX library's version, as it reports it (`ucp_get_version_string`).
    pub fn version() -> &'static str {
        // SAFETY: returns a static string.
        let version = unsafe { CStr::from_ptr(sys::ucp_get_version_string()) };
        version.to_str().unwrap_or("?")
    }

    /// Whether `self` and `other` are the same context.
    pub fn same(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The context handle, live while `self` is.
    pub(crate) fn raw(&self) -> sys::ucp_context_h {
        self.inner.0
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("handle", &self.inner.0)
            .field("version", &Context::version())
            .finish()
    }
}
