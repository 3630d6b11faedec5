//! [`Context`]: one UCP context, shared by the registrations and workers
//! made from it.

use core::fmt;
use core::ptr;
use std::ffi::{CStr, CString};
use std::sync::Arc;

use super::error::check;
use super::worker::Worker;
use super::{grant, sys};
use crate::Error;

/// Whom a context's workers are open to: the choice every [`Context`]
/// constructor asks for, so that it is made where the context is.
///
/// UCX's remote memory access trusts its peers. A context with it
/// (`UCP_FEATURE_RMA`, which a [`Registered`](super::Registered) needs)
/// makes every worker carry out software puts and gets that a connected
/// peer sends (UCX 1.13.1, `src/ucp/rma/rma_sw.c`: `ucp_put_handler`
/// writes, and `ucp_get_req_handler` reads, the address the message names,
/// with no key check), on every transport, those whose hardware checks
/// keys (`rc`, `dc`) included; and UCX connects peers without
/// authentication. So a process that connects to a worker of this context
/// can read and write all of this process's memory, registered or not, by
/// driving UCX itself. Who can connect depends on the transports: over
/// `tcp`, anyone who reaches the worker's TCP port on a device it uses
/// (`UCX_NET_DEVICES`); over shared memory (`posix`, `sysv`, `cma`),
/// processes of the same user on the machine; over InfiniBand or RoCE
/// (`rc`, `ud`, `dc`), the fabric. The module docs (*Trust*) say what
/// unimem guarantees on top: a peer that uses unimem reaches only what the
/// owner granted it, and no bytes that did not come from a peer reach UCX
/// through a safe call.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peers {
    /// Every process that can connect to this context's workers (see
    /// above) is trusted with this process's memory: run it on a machine
    /// and network whose processes you trust that far. UCX 1.13 has no
    /// other mode.
    Trusted,
}

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

/// The context handle, cleaned up on drop, and the context's identity.
struct Handle {
    raw: sys::ucp_context_h,
    /// A random number naming the context in this process's link frames:
    /// a worker address and a descriptor it confirms carry it, and a peer
    /// unpacks a key only on an endpoint to a worker of the context that
    /// packed it.
    id: u64,
}

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
        unsafe { sys::ucp_cleanup(self.raw) }
    }
}

impl Context {
    /// Initializes UCP for remote memory access (`UCP_FEATURE_RMA`), with
    /// the settings in the environment, for the `peers` it is open to
    /// ([`Peers`]: read it).
    pub fn new(peers: Peers) -> Result<Context, Error> {
        Context::with_settings(peers, &[])
    }

    /// As [`Context::new`], with `settings` (name and value, the name
    /// without its `UCX_` prefix: `("TLS", "tcp")`, `("NET_DEVICES", "lo")`)
    /// over those of the environment (`ucp_config_modify`).
    ///
    /// Errors: a name or value with a NUL byte ([`Error::InvalidArgument`]),
    /// and what UCX says of a setting it does not know or a value it does
    /// not take.
    pub fn with_settings(peers: Peers, settings: &[(&str, &str)]) -> Result<Context, Error> {
        let Peers::Trusted = peers;
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
        let mut handle = Handle { raw: handle, id: 0 };
        // A failure to read random bytes cleans the context up (drop).
        handle.id = u64::from_ne_bytes(grant::random()?);
        Ok(Context {
            inner: Arc::new(handle),
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
        self.inner.raw
    }

    /// The context's random identity (see `Handle::id`).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("handle", &self.inner.raw)
            .field("version", &Context::version())
            .finish()
    }
}
