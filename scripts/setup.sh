# Installs what building and testing the limiter needs, each piece only when it is missing,
# saying what it does. Sourced by scripts/dev and scripts/test (not run on its own).
# Everything comes from the package registries: rustup, crates, npm, and Debian's apt.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '==> %s\n' "$*"; }

WORKER_BUILD_VERSION=0.8.7
# wasm-bindgen-cli must match the wasm-bindgen crate the lockfile pins, exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)

if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "wasm32 target: present"
else
  say "wasm32 target: installing"
  rustup target add wasm32-unknown-unknown
fi

# The lint gate of scripts/test: rustfmt and clippy, from rustup.
for component in rustfmt clippy; do
  if rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "$component: present"
  else
    say "$component: installing (rustup component)"
    rustup component add "$component"
  fi
done

if worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  say "worker-build $WORKER_BUILD_VERSION: present"
else
  say "worker-build $WORKER_BUILD_VERSION: installing (a few minutes on 2 cores)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi

if wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: present"
else
  say "wasm-bindgen-cli $WASM_BINDGEN_VERSION: installing (a few minutes on 2 cores)"
  # Not --locked: its own lockfile pins a crate version the registry no longer serves.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

if [ -x node_modules/.bin/wrangler ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  say "npm packages: present"
else
  say "npm packages: installing (npm ci)"
  npm ci --no-audit --no-fund
fi

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# need_apt COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing.
need_apt() {
  if command -v "$1" >/dev/null; then
    say "$1: present"
  else
    say "$1: installing (apt package $2)"
    apt_install "$2"
  fi
}

need_apt redis-server redis-server

# Only the benchmark needs wrk; scripts/bench sets NEED_WRK=1.
if [ -n "${NEED_WRK:-}" ]; then
  need_apt wrk wrk
fi

# Fuzzing needs nightly Rust and cargo-fuzz; scripts/fuzz (and so scripts/test) sets NEED_FUZZ=1.
if [ -n "${NEED_FUZZ:-}" ]; then
  if rustup toolchain list | grep -q '^nightly'; then
    say "nightly Rust (for cargo fuzz): present"
  else
    say "nightly Rust (for cargo fuzz): installing (rustup, minimal profile)"
    rustup toolchain install nightly --profile minimal
  fi
  if cargo fuzz --version >/dev/null 2>&1; then
    say "cargo-fuzz: present"
  else
    say "cargo-fuzz: installing (a few minutes on 2 cores)"
    cargo install cargo-fuzz --locked
  fi
fi

# Only the tests need a browser (the dashboard test drives Debian's Chromium with
# playwright-core); scripts/test sets NEED_BROWSER=1.
if [ -n "${NEED_BROWSER:-}" ]; then
  need_apt chromium chromium
fi

# The real-app tests (a Gradio app and its official client) need a Python virtual environment
# with the pinned packages of tests/apps/requirements.txt; scripts/test sets NEED_APPS=1.
if [ -n "${NEED_APPS:-}" ]; then
  APPS_VENV="$ROOT/.venv-apps"
  if [ -x "$APPS_VENV/bin/python" ] && [ "$APPS_VENV/.installed" -nt tests/apps/requirements.txt ]; then
    say "Python apps for the tests (gradio, gradio_client): present"
  else
    say "Python apps for the tests: installing gradio and gradio_client (pip, into .venv-apps)"
    python3 -m venv "$APPS_VENV"
    "$APPS_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/apps/requirements.txt
    touch "$APPS_VENV/.installed"
  fi
  export APPS_PYTHON="$APPS_VENV/bin/python"
fi

# worker-build uses these instead of downloading its own tools (it cannot reach them here).
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
