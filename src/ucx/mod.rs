//! UCX: a remote process puts and gets straight into a Block's
//! collections (feature `ucx`).
//!
//! The declarations of the UCX calls this module makes are written by hand
//! and checked against the installed headers on every build (`sys.rs`).

#[cfg(test)]
#[expect(dead_code, reason = "the calls made through them come next")]
mod sys;
