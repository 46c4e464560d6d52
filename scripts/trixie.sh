#!/usr/bin/env bash
# PostgreSQL 17 from Debian 13 (trixie) on a bookworm machine: its binaries need glibc 2.38, so
# they live in a trixie root made by debootstrap, and the steps for 17 run inside it.
#   scripts/trixie.sh create        make the root (idempotent; about two minutes)
#   scripts/trixie.sh check         fail unless the root matches today's package list
#   scripts/trixie.sh run CMD...    run CMD inside the root, from the source tree
# `run` mounts what the root borrows (the Rust toolchain, the source tree, /proc, /dev, and
# PostgreSQL 16's relocatable install for pg_upgrade from 16) in a
# private mount namespace: the mounts vanish with the command, whatever way it ends, and are
# never visible outside it. Builds inside use their own target directory (target/trixie):
# objects linked against trixie's glibc must never be reused by builds outside.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/majors.sh"
repo=$(cd "$here/.." && pwd)

# The root's packages: PostgreSQL 17 and what pgrx needs to build against it, Python for the
# benchmark, and what Citus needs to build.
ROOT_PACKAGES=(postgresql-17 postgresql-server-dev-17 libclang-dev gcc libc6-dev pkg-config sudo
    ca-certificates python3 python3-venv make libcurl4-openssl-dev liblz4-dev libzstd-dev
    libkrb5-dev libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev zlib1g-dev
    libicu-dev tzdata-legacy nodejs npm xz-utils)
# nodejs, npm: the real session libraries of the framework tests. xz-utils: unpacking the vendored
# Citus (minbase has no xz, and no recommends are installed). tzdata-legacy: trixie moved the zone names PostgreSQL's own builds ship (EST, MST, US/Eastern,
# ...) out of tzdata; PostgreSQL 15, 16 and 18 here bundle them, so 17 gets them too.

mirror() {
    # The Debian mirror of this machine's own apt sources (SESSION_GC_DEBIAN_MIRROR overrides).
    local uri
    uri=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+\/debian)\/?([[:space:]].*)?$/\1/p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+\/debian)\/?[[:space:]].*/\2/p' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 || true)
    echo "${SESSION_GC_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

# The root is keyed by its recipe: the package list and the way it is made. Its mark holds the
# recipe's hash; a root whose mark differs is made again from scratch, never patched, so that a
# developer's machine meets exactly what a fresh one meets.
ROOT_RECIPE_VERSION=2 # minimal debootstrap, then apt-get inside the root
root_recipe_hash() {
    printf '%s\n' "recipe $ROOT_RECIPE_VERSION" "${ROOT_PACKAGES[@]}" | sha256sum | cut -d' ' -f1
}
root_mark_hash() { sed -n 's/^recipe-hash: //p' "$TRIXIE_ROOT$TRIXIE_MARK" 2>/dev/null || true; }

# Fails unless the root exists and was made from today's recipe (the test command's check).
check() {
    local want have
    want=$(root_recipe_hash)
    have=$(root_mark_hash)
    if [ "$have" != "$want" ]; then
        echo "the trixie root $TRIXIE_ROOT was not made from the current package list" >&2
        echo "   its mark: ${have:-none}; the list: $want (scripts/trixie.sh create makes it again)" >&2
        return 1
    fi
    local missing=() p
    for p in "${ROOT_PACKAGES[@]}"; do
        as_root chroot "$TRIXIE_ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "the trixie root lacks packages of its list: ${missing[*]}" >&2
        return 1
    fi
}

create() {
    if [ "$(root_mark_hash)" = "$(root_recipe_hash)" ]; then
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ -e "$TRIXIE_ROOT" ]; then
        echo "== the trixie root's package list changed: making it again from scratch"
    fi
    echo "== making a Debian 13 root for PostgreSQL 17 in $TRIXIE_ROOT (about two minutes)"
    # Built aside and moved in place at the end: an interrupted run leaves no half root behind.
    # Nothing is ever mounted on it outside a `run` namespace, so removing it is safe.
    local building="$TRIXIE_ROOT.building" log=/tmp/session_gc-debootstrap.log
    as_root rm -rf "$building"
    as_root mkdir -p "$(dirname "$TRIXIE_ROOT")"
    # debootstrap's resolver does not follow Provides: (trixie's npm needs a package that only
    # another provides), so it makes a bare root and apt, which does, installs the list inside.
    if ! as_root debootstrap --variant=minbase trixie "$building" "$(mirror)" >"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "debootstrap failed (whole log: $log)" >&2
        exit 1
    fi
    as_root cp /etc/resolv.conf "$building/etc/resolv.conf"
    if ! as_root unshare --mount --propagation private bash -euc '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends \"\$@\"" apt "$@"
    ' trixie "$building" "${ROOT_PACKAGES[@]}" >>"$log" 2>&1; then
        tail -20 "$log" >&2
        echo "installing the packages into the trixie root failed (whole log: $log)" >&2
        exit 1
    fi
    as_root chroot "$building" apt-get clean
    as_root mkdir -p "$building/session_gc" "$building/root/.cargo" "$building/root/.rustup"
    printf '%s\n' "Debian 13 root for session_gc's PostgreSQL 17 steps" "recipe-hash: $(root_recipe_hash)" \
        | as_root tee "$building$TRIXIE_MARK" >/dev/null
    as_root rm -rf "$TRIXIE_ROOT"
    as_root mv "$building" "$TRIXIE_ROOT"
    echo "   the root is ready: $TRIXIE_ROOT"
}

run() {
    create
    local cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
    # What runs inside: a clean environment with the borrowed toolchain, the machine's
    # certificate settings and the suite's knobs, the source tree as cwd.
    local environment=(HOME=/root "TERM=${TERM:-dumb}" "CI=${CI:-}"
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        CARGO_TARGET_DIR=/session_gc/target/trixie "SESSION_GC_PG16_HOME=$PG16_HOME") name
    for name in SESSION_GC_FUZZ_SEED SESSION_GC_FUZZ_ROUNDS NODE_EXTRA_CA_CERTS SSL_CERT_FILE \
        REQUESTS_CA_BUNDLE PIP_CERT CURL_CA_BUNDLE; do
        if [ -n "${!name:-}" ]; then environment+=("$name=${!name}"); fi
    done
    as_root unshare --mount --propagation private bash -euc '
        root=$1 repo=$2 cargo_home=$3 rustup_home=$4 pg16_home=$5; shift 5
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --bind "$cargo_home" "$root/root/.cargo"
        mount --bind "$rustup_home" "$root/root/.rustup"
        mount --bind "$repo" "$root/session_gc"
        # PostgreSQL 16 (relocatable, an older glibc), for pg_upgrade from 16 to 17 inside.
        if [ -d "$pg16_home" ]; then
            mkdir -p "$root$pg16_home"
            mount --bind "$pg16_home" "$root$pg16_home"
        fi
        # The machine'"'"'s name resolution, certificate authorities and pip settings, so that
        # cargo, pip and npm inside reach the registries the way they do outside.
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
        if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
        exec chroot "$root" /usr/bin/env -i "$@"
    ' trixie "$TRIXIE_ROOT" "$repo" "$cargo_home" "$rustup_home" "$PG16_HOME" "${environment[@]}" \
        bash -euc 'cd /session_gc && exec "$@"' inside "$@"
}

case "${1:-}" in
    create) create ;;
    check) check ;;
    run) shift; [ $# -gt 0 ] || { echo "usage: scripts/trixie.sh run CMD..." >&2; exit 2; }; run "$@" ;;
    *) echo "usage: scripts/trixie.sh create | check | run CMD..." >&2; exit 2 ;;
esac
