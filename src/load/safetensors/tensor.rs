//! [`Tensor`]: one loaded tensor: its name, dtype, shape and bytes in the
//! Tape, and typed views of them that check dtype, length and alignment.

use half::{bf16, f16};

use super::super::{Dtype, LoadError, ViewError};
use super::Element;

/// One tensor of a loaded checkpoint ([`Tensors`](super::Tensors)), its
/// bytes in the Tape they were read into.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub(crate) name: &'a str,
    pub(crate) dtype: Dtype,
    pub(crate) shape: &'a [usize],
    pub(crate) bytes: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Its dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Its shape (empty for a scalar).
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// How many elements it has (1 for a scalar, 0 if a dimension is 0).
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Its bytes, as the file has them (little-endian).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its elements as `T`, if its dtype is `T`'s
    /// ([`Element::DTYPE`]) and its bytes are a whole number of `T`s at an
    /// address aligned for `T` (always, at the default alignment of 64).
    /// A typed [`LoadError::View`] otherwise, never a reinterpretation.
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], LoadError> {
        let refuse = |error| LoadError::View {
            name: self.name.to_string(),
            error,
        };
        if self.dtype != T::DTYPE {
            return Err(refuse(ViewError::Dtype {
                dtype: self.dtype,
                asked: T::DTYPE,
            }));
        }
        let size = size_of::<T>();
        if !self.bytes.len().is_multiple_of(size) {
            return Err(refuse(ViewError::Length {
                bytes: self.bytes.len(),
                size,
            }));
        }
        let address = self.bytes.as_ptr().addr();
        if !address.is_multiple_of(align_of::<T>()) {
            return Err(refuse(ViewError::Alignment {
                address,
                align: align_of::<T>(),
            }));
        }
        // SAFETY: the bytes are initialized and live for 'a; their address
        // is aligned for T and their length a whole number of Ts (checked
        // above); every bit pattern is a T (the `Element` contract, sealed
        // to plain numbers); and the memory is only read while borrowed.
        Ok(unsafe {
            core::slice::from_raw_parts(self.bytes.as_ptr().cast(), self.bytes.len() / size)
        })
    }

    /// Its elements as `f32` (dtype `F32`).
    pub fn as_f32(&self) -> Result<&'a [f32], LoadError> {
        self.as_slice()
    }

    /// Its elements as `f64` (dtype `F64`).
    pub fn as_f64(&self) -> Result<&'a [f64], LoadError> {
        self.as_slice()
    }

    /// Its elements as `half::f16` (dtype `F16`).
    pub fn as_f16(&self) -> Result<&'a [f16], LoadError> {
        self.as_slice()
    }

    /// Its elements as `half::bf16` (dtype `BF16`).
    pub fn as_bf16(&self) -> Result<&'a [bf16], LoadError> {
        self.as_slice()
    }

    /// Its elements as `i8` (dtype `I8`).
    pub fn as_i8(&self) -> Result<&'a [i8], LoadError> {
        self.as_slice()
    }

    /// Its elements as `u8` (dtype `U8`; every dtype's raw bytes are
    /// [`bytes`](Tensor::bytes)).
    pub fn as_u8(&self) -> Result<&'a [u8], LoadError> {
        self.as_slice()
    }

    /// Its elements as `i16` (dtype `I16`).
    pub fn as_i16(&self) -> Result<&'a [i16], LoadError> {
        self.as_slice()
    }

    /// Its elements as `u16` (dtype `U16`).
    pub fn as_u16(&self) -> Result<&'a [u16], LoadError> {
        self.as_slice()
    }

    /// Its elements as `i32` (dtype `I32`).
    pub fn as_i32(&self) -> Result<&'a [i32], LoadError> {
        self.as_slice()
    }

    /// Its elements as `u32` (dtype `U32`).
    pub fn as_u32(&self) -> Result<&'a [u32], LoadError> {
        self.as_slice()
    }

    /// Its elements as `i64` (dtype `I64`).
    pub fn as_i64(&self) -> Result<&'a [i64], LoadError> {
        self.as_slice()
    }

    /// Its elements as `u64` (dtype `U64`).
    pub fn as_u64(&self) -> Result<&'a [u64], LoadError> {
        self.as_slice()
    }
}
