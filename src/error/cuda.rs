//! [`CudaError`]: what went wrong with CUDA (feature `cuda`; re-exported by
//! `unimem::cuda`).

use core::fmt;

use cudarc::driver::DriverError;

use super::Error;

/// What went wrong with CUDA.
#[derive(Debug)]
#[non_exhaustive]
pub enum CudaError {
    /// No CUDA driver library (`libcuda.so`) could be loaded.
    NoDriver,
    /// The driver has no device with this ordinal.
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// A driver call failed; `error` carries the CUDA error code.
    Driver {
        /// The driver function that failed.
        call: &'static str,
        /// The error it returned.
        error: DriverError,
    },
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDriver => f.write_str(
                "no CUDA driver: libcuda.so could not be loaded (is the NVIDIA driver installed?)",
            ),
            CudaError::NoDevice { ordinal, count } => {
                write!(f, "no CUDA device {ordinal}: the driver reports {count}")
            }
            CudaError::Driver { call, error } => {
                write!(
                    f,
                    "{call} failed with CUDA error {} ({error})",
                    error.0 as i32
                )
            }
        }
    }
}

impl std::error::Error for CudaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CudaError::Driver { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<CudaError> for Error {
    fn from(error: CudaError) -> Error {
        Error::Cuda(error)
    }
}
