//! The ports, one module each, and what they share.

pub mod alloc_test;
pub mod cache;
pub mod common;
pub mod foreign_first;
pub mod glibc_simple;
pub mod larson;
pub mod many_threads;
pub mod mstress;
pub mod rptest;
pub mod xmalloc;
pub mod zeroed_churn;
