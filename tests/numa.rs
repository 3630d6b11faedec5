//! NUMA placement: a Block opened on a node is bound to it (`mbind`) before
//! a page is populated, private, shared and huge-page Blocks alike, and
//! reports every page there; allocators pass the node on to their Blocks; a
//! node that does not exist is a typed error; and a system that refuses
//! `mbind` (simulated here by a seccomp filter in a child process, as a
//! container's profile refuses it) fails a required placement and is told
//! once, going on, for a best-effort one.
//!
//! On a machine of one node every page is on node 0 whatever the policy,
//! so these tests also read the policy back (`get_mempolicy`) at addresses
//! in the Blocks: a range that was not bound has the default policy.
//!
//! A system that refuses memory policies to this process (a container
//! without the right) reports the tests that need them `ignored`; CI sets
//! `UNIMEM_REQUIRE_NUMA=1`, which makes that a failure.

#[macro_use]
mod harness;
#[cfg(target_os = "linux")]
#[path = "numa/linux.rs"]
mod linux;
#[cfg(target_os = "linux")]
use linux::*;

fn main() {
    #[cfg(target_os = "linux")]
    harness::main(&[
        test!(node_zero_holds_every_page),
        test!(every_node_with_memory_holds_the_blocks_placed_on_it),
        test!(huge_pages_are_bound_too),
        test!(only_pages_in_memory_are_reported),
        test!(a_node_that_does_not_exist_is_a_typed_error),
        test!(allocators_pass_the_node_on),
        test!(a_required_node_bounds_what_a_commit_may_fault_in),
        test!(attach_takes_no_node),
        test!(pci_devices_report_their_node),
        test!(a_refused_mbind_is_handled_as_placement_says),
        test!(child_best_effort_goes_on),
        test!(child_required_fails),
    ]);
}
