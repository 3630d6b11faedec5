//! UCX's statuses as [`UcxError`]s (the type itself is with the crate's
//! other errors, `error/ucx.rs`).

use std::ffi::CStr;

use super::sys;
use crate::Error;
pub use crate::error::UcxError;

impl UcxError {
    /// The error of `call` returning `status`.
    pub(crate) fn call(call: &'static str, status: sys::ucs_status_t) -> UcxError {
        UcxError::Call {
            call,
            status,
            text: status_text(status),
        }
    }

    /// The UCX status, for errors that carry one.
    pub fn status(&self) -> Option<i8> {
        match self {
            UcxError::Call { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// UCX's text for a status.
pub(crate) fn status_text(status: sys::ucs_status_t) -> &'static str {
    // SAFETY: `ucs_status_string` returns a pointer to a static string for
    // every value ("Unknown error" for values it does not know).
    let text = unsafe { CStr::from_ptr(sys::ucs_status_string(status)) };
    text.to_str().unwrap_or("(not UTF-8)")
}

/// `Ok` for `UCS_OK`, else the error of `call`.
pub(crate) fn check(call: &'static str, status: sys::ucs_status_t) -> Result<(), Error> {
    if status == sys::UCS_OK {
        Ok(())
    } else {
        Err(UcxError::call(call, status).into())
    }
}
