//! [`Element`]: the element types a tensor can be viewed as, each tied to
//! the one dtype it reads.

use half::{bf16, f16};

use super::super::Dtype;

mod sealed {
    pub trait Sealed {}
}

/// An element type of a typed tensor view: plain data for which every bit
/// pattern is a value (so any bytes of the right length and alignment can
/// be read as a slice of it), tied to the dtype it reads. Implemented for
/// `f32`, `f64`, `half::f16`, `half::bf16`, and the integers of 8 to 64
/// bits; sealed.
pub trait Element: Copy + sealed::Sealed + 'static {
    /// The dtype whose bytes this type reads (little-endian, as
    /// safetensors stores them, on a little-endian machine).
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const DTYPE: Dtype = Dtype::$dtype;
        }
    )*};
}

element! {
    f32 => F32,
    f64 => F64,
    f16 => F16,
    bf16 => BF16,
    i8 => I8,
    u8 => U8,
    i16 => I16,
    u16 => U16,
    i32 => I32,
    u32 => U32,
    i64 => I64,
    u64 => U64,
}
