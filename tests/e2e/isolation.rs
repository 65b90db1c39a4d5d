//! The settings of whoever runs the tests do not reach the handler a test starts.

/// A test that starts the handler behind the local host.
const TEST: &str =
    "key_regenerated::a_regeneration_updates_stale_datastores_in_place_and_resyncs_the_workspace";

/// Settings a developer could have in their shell, each of which changes what the handler does:
/// a client id that is no GUID and no concurrency stop it at start-up, a proxy that answers
/// nothing cuts it off from the emulator, and the others send it elsewhere or turn storage
/// checks on against Azure's own host names.
const SETTINGS: [(&str, &str); 6] = [
    ("AZURE_CLIENT_ID", "x"),
    ("KEYSYNC_MAX_CONCURRENCY", "0"),
    ("KEYSYNC_SUBSCRIPTIONS", "bogus"),
    ("KEYSYNC_VERIFY", "true"),
    ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
    ("HTTP_PROXY", "http://127.0.0.1:9"),
];

/// Runs [`TEST`] again, in a process of its own with [`SETTINGS`] in its environment: it passes
/// as it does without them.
#[test]
fn a_developers_own_settings_do_not_change_what_a_test_does() {
    let run = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([TEST, "--exact"])
        .envs(SETTINGS)
        .output()
        .expect("the test binary runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{printed}");
    assert!(printed.contains("1 passed"), "{printed}");
}
