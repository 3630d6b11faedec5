//! Lines for standard error that are formatted on the stack and written with
//! `write(2)`: what the allocators say from places where nothing may
//! allocate (inside a global allocator, before `main`, or about to abort).

use core::fmt::{self, Write};

/// A line of at most `N` bytes on the stack; what does not fit is cut.
pub(crate) struct Line<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    pub(crate) fn new() -> Self {
        Line {
            bytes: [0; N],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Writes the line to standard error.
    pub(crate) fn emit(&self) {
        crate::sys::write_stderr(self.as_bytes());
    }
}

impl<const N: usize> Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_not_overrun() {
        let mut line = Line::<16>::new();
        for _ in 0..10 {
            line.write_str("0123456789").unwrap();
        }
        assert_eq!(line.as_bytes(), b"0123456789012345");
    }
}
