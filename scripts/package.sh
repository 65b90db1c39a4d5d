#!/usr/bin/env bash
# Builds the deployable package, dist/keysync.zip: a statically linked x86-64 Linux release binary
# (musl) named `keysync`, `host.json`, and every function folder from functions/, side by side at
# the root of the zip, as the Functions host expects them.
#
# Needs: the Rust target x86_64-unknown-linux-musl (added here with rustup when missing), a musl C
# compiler for aws-lc-sys (Debian: `apt-get install musl-tools`, which provides musl-gcc), and
# `zip` (Debian: `apt-get install zip`). Prints the path of the package on success.
#
#   scripts/package.sh                      # build dist/keysync.zip
#   KEYSYNC_DIST=out scripts/package.sh     # out/keysync.zip, relative to the repository's root
#   KEYSYNC_DIST=/tmp/pkg scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
dist=${KEYSYNC_DIST:-dist}
package="$dist/keysync.zip"

fail() {
    echo "package: $*" >&2
    exit 1
}

check_tools() {
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "package: adding the Rust target $target" >&2
        rustup target add "$target" >&2 || fail "cannot add the Rust target $target"
    fi
    command -v "${CC_x86_64_unknown_linux_musl:-x86_64-linux-musl-gcc}" >/dev/null ||
        fail "no musl C compiler (x86_64-linux-musl-gcc): install musl-tools (apt-get install musl-tools)"
    command -v zip >/dev/null || fail "zip not found: install zip (apt-get install zip)"
}

build_binary() {
    # aws-lc-sys (rustls' crypto) compiles C. For this target its build script finds
    # x86_64-linux-musl-gcc (from musl-tools) by itself and builds without cmake; it warns that
    # linux/random.h is missing (musl-gcc hides the kernel headers), which only turns off an
    # optional probe. Set CC_x86_64_unknown_linux_musl to use another musl compiler.
    cargo build --release --locked --target "$target" --bin keysync >&2
}

stage() {
    local root=$1
    install -m 0755 "${CARGO_TARGET_DIR:-target}/$target/release/keysync" "$root/keysync"
    install -m 0644 host.json "$root/host.json"
    local dir name
    for dir in functions/*/; do
        name=$(basename "$dir")
        [[ -f "$dir/function.json" ]] || fail "$dir has no function.json"
        [[ ! -e "$root/$name" ]] || fail "function folder $name clashes with another package entry"
        install -d -m 0755 "$root/$name"
        install -m 0644 "$dir/function.json" "$root/$name/function.json"
    done
}

zip_package() {
    local root=$1 out=$package
    # zip runs inside the staging folder, so it needs the package's absolute path.
    [[ $out == /* ]] || out="$(pwd)/$out"
    mkdir -p "$dist"
    rm -f "$out"
    # A fixed time and a sorted list make the zip depend only on its contents; -X leaves out
    # owner ids; zip keeps each file's Unix mode, so keysync stays executable.
    find "$root" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
    (cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | zip -q -X -D "$out" -@)
}

main() {
    check_tools
    build_binary
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    stage "$staging"
    zip_package "$staging"
    echo "$package"
}

main "$@"
