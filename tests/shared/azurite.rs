//! Finding Azurite for a test that needs it: shared by the end-to-end, command-line and demo
//! tests.

use std::io::Write;
use std::path::PathBuf;

use keysync::emulator::azurite;

/// Azurite's executable (`npm ci` in the repository root puts it in `node_modules/`, or
/// `KEYSYNC_AZURITE` names one), or `None` after saying that `test` is skipped.
/// `KEYSYNC_REQUIRE_AZURITE=1`, as `.ci/run` sets it, turns the skip into a failure.
pub fn azurite_or_skip(test: &str) -> Option<PathBuf> {
    let found = azurite::find(&[PathBuf::from(env!("CARGO_MANIFEST_DIR"))]);
    if found.is_none() {
        let hint = "run `npm ci` in the repository root, or set KEYSYNC_AZURITE";
        if std::env::var("KEYSYNC_REQUIRE_AZURITE").is_ok_and(|v| v == "1") {
            panic!("{test}: Azurite is required (KEYSYNC_REQUIRE_AZURITE=1) but missing: {hint}");
        }
        // Written to the stderr handle itself, which the test harness does not capture, so the
        // skip shows in a plain `cargo test`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: Azurite is not installed; {hint}"
        );
    }
    found
}
