//! What the test binaries share: the options their Blocks open with.

use unimem::BlockOptions;

/// The options the tests open Blocks with: the defaults (pinned where the
/// locked-memory limit allows), quiet, since a refusal is expected under an
/// ordinary user's limit and is not what these tests check.
pub fn options() -> BlockOptions<'static> {
    BlockOptions::new().quiet(true)
}
