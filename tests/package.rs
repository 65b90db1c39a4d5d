//! The deployable package (`scripts/package.sh` → `dist/keysync.zip`), unpacked and checked the
//! way the Functions host will use it: the layout at the root of the zip, a static x86-64 binary
//! that stays executable, `host.json` pointing at it, and every `function.json` naming a function
//! the unpacked binary serves.
//!
//! The test uses `dist/keysync.zip` when it is newer than its sources (`.ci/run` builds it first)
//! and otherwise runs the package script once. Where the package cannot be built because a tool
//! it needs is missing (the Rust target x86_64-unknown-linux-musl, a musl C compiler, `zip`), each
//! test prints a SKIP line and passes, unless `KEYSYNC_REQUIRE_PACKAGE=1` (set by `.ci/run`),
//! which turns that into a failure. With the tools present, a failing build fails the tests.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use keysync::emulator::{EmulatorOptions, RunningEmulator, Scenario};
use keysync::host::{BindingEncoding, FunctionApp, HostOptions, LocalHost, Trigger};
use serde_json::{Value, json};

#[path = "shared/environment.rs"]
mod environment;

const BINARY: &str = "keysync";
const SUB: &str = "11111111-2222-3333-4444-555555555555";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The package to check, built at most once per test run.
static PACKAGE: LazyLock<Package> = LazyLock::new(find_or_build);

enum Package {
    Ready(PathBuf),
    /// A tool the build needs is missing here: the tests skip.
    CannotBuild(String),
    /// The build ran and failed: the tests fail.
    BuildFailed(String),
}

fn find_or_build() -> Package {
    if let Some(path) = std::env::var_os("KEYSYNC_PACKAGE") {
        return Package::Ready(PathBuf::from(path));
    }
    let zip = repo().join("dist/keysync.zip");
    if is_fresh(&zip) {
        return Package::Ready(zip);
    }
    if let Some(missing) = missing_tool() {
        return Package::CannotBuild(missing);
    }
    let output = match Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(e) => return Package::CannotBuild(format!("cannot run bash: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Package::BuildFailed(format!(
            "scripts/package.sh failed ({}):\n{}",
            output.status,
            tail.join("\n")
        ));
    }
    Package::Ready(zip)
}

/// What scripts/package.sh needs and this machine lacks, if anything: the musl standard library
/// for the target, a musl C compiler (for aws-lc-sys) and `zip`.
fn missing_tool() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_target =
        sysroot.is_some_and(|root| root.join("lib/rustlib").join(MUSL_TARGET).is_dir());
    if !has_target {
        return Some(format!(
            "the Rust target {MUSL_TARGET} is not installed (rustup target add {MUSL_TARGET})"
        ));
    }
    let compiler = std::env::var("CC_x86_64_unknown_linux_musl")
        .unwrap_or_else(|_| "x86_64-linux-musl-gcc".into());
    if !on_path(&compiler) {
        return Some(format!(
            "no musl C compiler ({compiler}): apt-get install musl-tools"
        ));
    }
    if !on_path("zip") {
        return Some("zip is not installed: apt-get install zip".into());
    }
    None
}

/// True when `program` is an executable file, by path or on `PATH`.
fn on_path(program: &str) -> bool {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

/// True when the zip exists and nothing it is built from changed after it: a package left over
/// from older sources would test the wrong binary.
fn is_fresh(zip: &Path) -> bool {
    let Ok(built) = zip.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let sources = ["src", "functions", "host.json", "Cargo.toml", "Cargo.lock"];
    sources
        .iter()
        .all(|s| newest(&repo().join(s)).is_none_or(|t| t <= built))
}

/// The latest modification time of a file, or of any file below a directory.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = path.metadata().ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The package path, or `None` after a visible SKIP line when a tool is missing (a failure when
/// the package is required). A failed build is a failure.
fn package() -> Option<&'static Path> {
    match &*PACKAGE {
        Package::Ready(path) => Some(path),
        Package::BuildFailed(failure) => panic!("{failure}"),
        Package::CannotBuild(reason) => {
            let required = std::env::var("KEYSYNC_REQUIRE_PACKAGE").is_ok_and(|v| v == "1");
            assert!(!required, "KEYSYNC_REQUIRE_PACKAGE=1 but {reason}");
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = writeln!(std::io::stderr(), "SKIP package test: {reason}");
            None
        }
    }
}

/// The package unpacked with `unzip` into a fresh directory.
fn unpack(zip: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("unzip")
        .args(["-q", "-o"])
        .arg(zip)
        .arg("-d")
        .arg(dir.path())
        .status()
        .expect("unzip runs (apt-get install unzip)");
    assert!(status.success(), "unzip {} failed", zip.display());
    dir
}

fn repo_functions() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("functions"))
        .expect("functions/")
        .flatten()
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_package_holds_host_json_the_binary_and_every_function_folder_at_its_root() {
    let Some(zip) = package() else { return };
    let entries = zip_entries(&std::fs::read(zip).expect("read the package"));

    let files: BTreeSet<String> = entries
        .iter()
        .filter(|e| !e.name.ends_with('/'))
        .map(|e| e.name.clone())
        .collect();
    let mut expected: BTreeSet<String> = [BINARY, "host.json"].map(String::from).into();
    expected.extend(
        repo_functions()
            .iter()
            .map(|f| format!("{f}/function.json")),
    );
    assert_eq!(
        files,
        expected,
        "{} holds other files than host.json, {BINARY} and functions/*/function.json \
         (rebuild it with scripts/package.sh if functions/ changed)",
        zip.display()
    );
    for dir in entries.iter().filter(|e| e.name.ends_with('/')) {
        let function = dir.name.trim_end_matches('/');
        assert!(
            repo_functions().contains(function),
            "unexpected folder {}",
            dir.name
        );
    }
}

#[test]
fn the_binary_is_a_static_x86_64_executable_with_mode_0755() {
    let Some(zip) = package() else { return };
    let entries = zip_entries(&std::fs::read(zip).expect("read the package"));
    let binary = entries
        .iter()
        .find(|e| e.name == BINARY)
        .expect("the binary is in the package");
    assert!(
        binary.unix,
        "the zip entry carries no Unix mode (made on another OS?)"
    );
    assert_eq!(binary.mode, 0o100755, "mode in the zip: {:o}", binary.mode);

    let dir = unpack(zip);
    let path = dir.path().join(BINARY);
    let mode = std::fs::metadata(&path)
        .expect("unpacked")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "unpacked mode: {mode:o}");
    let elf = elf::read(&std::fs::read(&path).expect("read the binary"));
    assert!(elf.x86_64, "not an x86-64 ELF executable");
    assert!(
        !elf.interpreter,
        "has a PT_INTERP header: dynamically linked"
    );
    assert_eq!(elf.needed, 0, "needs shared libraries (DT_NEEDED entries)");
}

#[test]
fn host_json_runs_the_packaged_binary_with_serve() {
    let Some(zip) = package() else { return };
    let dir = unpack(zip);
    let host: Value = read_json(&dir.path().join("host.json"));
    let description = &host["customHandler"]["description"];
    assert_eq!(description["defaultExecutablePath"], BINARY);
    assert_eq!(description["arguments"], json!(["serve"]));
    assert!(dir.path().join(BINARY).is_file());
    assert_eq!(
        host,
        read_json(&repo().join("host.json")),
        "the packaged host.json differs from the repository's: rebuild with scripts/package.sh"
    );
}

#[tokio::test]
async fn every_function_json_names_a_function_the_packaged_binary_serves() {
    let Some(zip) = package() else { return };
    let dir = unpack(zip);
    let app = FunctionApp::load(dir.path()).expect("host.json and every function.json parse");
    let names: BTreeSet<String> = app.functions.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, repo_functions());

    let emulator = RunningEmulator::start(Scenario::demo(), EmulatorOptions::default())
        .await
        .expect("emulator starts");
    // The timer's sweep reconciles every account: without Azurite, storage checks would go to
    // the demo accounts' real Azure hostnames.
    let mut env = emulator.env();
    env.push(("KEYSYNC_VERIFY".into(), "false".into()));
    // No executable given: the host resolves host.json's defaultExecutablePath in the app root.
    let host = LocalHost::start(HostOptions {
        app_root: dir.path().to_path_buf(),
        executable: None,
        env,
        env_remove: environment::inherited_settings(),
        echo_output: std::env::var_os("KEYSYNC_TEST_ECHO").is_some(),
        encoding: BindingEncoding::Object,
        listen: ([127, 0, 0, 1], 0).into(),
        function_key: None,
    })
    .await
    .expect("the packaged binary starts and answers GET /");

    for function in &app.functions {
        check_served(&host, &function.name, &function.trigger).await;
    }
    assert_eq!(host.shutdown().await.expect("stops"), Some(0));
    emulator.shutdown().await;
}

/// Invokes `name` as the host would for its trigger and checks the handler routes it.
async fn check_served(host: &LocalHost, name: &str, trigger: &Trigger) {
    let record = match trigger {
        Trigger::EventGrid => {
            let event = ignored_event();
            let metadata = keysync::host::invoke::event_grid_metadata(&event);
            host.invoke(name, &event, metadata).await
        }
        Trigger::Timer { .. } => host.tick(name, false).await,
        // With enableForwardingHttpRequest the host forwards the request to its own path.
        Trigger::Http { route, .. } => {
            let path = format!("api/{}", route.as_deref().unwrap_or(name));
            host.post_raw(&path, b"{}").await
        }
        Trigger::Other(_) => host.post_raw(name, b"{}").await,
    }
    .expect("the invocation is sent");
    assert!(
        !matches!(record.status, 0 | 404 | 405),
        "{name}: the handler does not serve it (status {}, {})",
        record.status,
        record.body
    );
    if !matches!(trigger, Trigger::Http { .. } | Trigger::Other(_)) {
        assert!(
            record.succeeded(),
            "{name}: {} {}",
            record.status,
            record.body
        );
    }
}

/// A `listKeys` event: the Event Grid function acknowledges it without touching anything.
fn ignored_event() -> Value {
    let account = format!(
        "/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01"
    );
    json!({
        "id": "5f1f0c4e-7f4b-4a43-9a43-0d6c2b7f0001",
        "topic": format!("/subscriptions/{SUB}"),
        "subject": account,
        "eventType": keysync::events::RESOURCE_ACTION_SUCCESS,
        "eventTime": "2025-01-01T00:00:00Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "operationName": "Microsoft.Storage/storageAccounts/listKeys/action",
            "resourceUri": account,
            "status": "Succeeded",
            "subscriptionId": SUB,
        },
    })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One entry of a zip's central directory.
struct ZipEntry {
    name: String,
    /// Made on Unix, so `mode` is meaningful.
    unix: bool,
    /// `st_mode` from the high half of the external attributes.
    mode: u32,
}

/// Reads the central directory (names and Unix modes) without unpacking anything.
fn zip_entries(zip: &[u8]) -> Vec<ZipEntry> {
    const END: u64 = 0x0605_4b50;
    const ENTRY: u64 = 0x0201_4b50;
    let end = (0..=zip.len().saturating_sub(22))
        .rev()
        .find(|&at| le(zip, at, 4) == END)
        .expect("a zip end-of-central-directory record");
    let count = le(zip, end + 10, 2);
    let mut at = le(zip, end + 16, 4) as usize;
    let mut entries = Vec::new();
    for _ in 0..count {
        assert_eq!(le(zip, at, 4), ENTRY, "central directory entry at {at}");
        let name_len = le(zip, at + 28, 2) as usize;
        let skip = le(zip, at + 30, 2) as usize + le(zip, at + 32, 2) as usize;
        let name = String::from_utf8_lossy(&zip[at + 46..at + 46 + name_len]).into_owned();
        entries.push(ZipEntry {
            name,
            unix: le(zip, at + 4, 2) >> 8 == 3,
            mode: (le(zip, at + 38, 4) >> 16) as u32,
        });
        at += 46 + name_len + skip;
    }
    entries
}

/// A little-endian unsigned integer of `len` bytes at `at`.
fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    let field = bytes
        .get(at..at + len)
        .unwrap_or_else(|| panic!("truncated: {len} bytes at {at} of {}", bytes.len()));
    field
        .iter()
        .rev()
        .fold(0, |value, &byte| (value << 8) | u64::from(byte))
}

/// Just enough of ELF64 to tell a static executable from a dynamic one.
mod elf {
    use super::le;

    const PT_DYNAMIC: u64 = 2;
    const PT_INTERP: u64 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;
    const EM_X86_64: u64 = 62;

    pub struct Elf {
        /// 64-bit, little-endian, x86-64, an executable or position-independent executable.
        pub x86_64: bool,
        /// A PT_INTERP program header: the binary asks for a dynamic loader.
        pub interpreter: bool,
        /// DT_NEEDED entries: shared libraries it needs.
        pub needed: usize,
    }

    pub fn read(file: &[u8]) -> Elf {
        assert_eq!(file.get(..4), Some(&b"\x7fELF"[..]), "not an ELF file");
        let x86_64 = file[4] == 2
            && file[5] == 1
            && matches!(le(file, 16, 2), 2 | 3)
            && le(file, 18, 2) == EM_X86_64;
        let mut elf = Elf {
            x86_64,
            interpreter: false,
            needed: 0,
        };
        let (offset, size, count) = (le(file, 32, 8), le(file, 54, 2), le(file, 56, 2));
        for i in 0..count {
            let header = (offset + i * size) as usize;
            match le(file, header, 4) {
                PT_INTERP => elf.interpreter = true,
                PT_DYNAMIC => {
                    let (at, len) = (le(file, header + 8, 8), le(file, header + 32, 8));
                    elf.needed += needed(file, at as usize, len as usize);
                }
                _ => {}
            }
        }
        elf
    }

    /// Counts DT_NEEDED entries in the dynamic section at `at` (16-byte tag/value pairs).
    fn needed(file: &[u8], at: usize, len: usize) -> usize {
        (at..at + len)
            .step_by(16)
            .map(|entry| le(file, entry, 8))
            .take_while(|&tag| tag != DT_NULL)
            .filter(|&tag| tag == DT_NEEDED)
            .count()
    }
}
