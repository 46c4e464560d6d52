#!/usr/bin/env bash
# Debian packages of session_gc, one per PostgreSQL major, named and laid out as PGDG's
# extension packages are (postgresql-16-cron, postgresql-16-partman):
#   target/debian/postgresql-NN-session-gc_VERSION-1_amd64.deb
# holding the library under the server's pkglibdir (/usr/lib/postgresql/NN/lib), the control
# file and the SQL scripts (this version's install script and every upgrade script) under its
# sharedir (/usr/share/postgresql/NN/extension), and the copyright under /usr/share/doc;
# Depends: postgresql-NN and the glibc the library was linked against. Built from the tree
# `cargo pgrx package` makes. For Debian's (and PGDG's) servers: 15 here, 17 inside the trixie
# root; 16 and 18 are relocatable installs here, which take the tree itself (README, Install).
# Usage: scripts/package.sh [15|17 ...]   (default: 15 and 17); prints each package's path
# (relative to the source tree) last.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(15 17)
for v in "${majors[@]}"; do
    case "$v" in
        15|17) ;;
        16|18) echo "PostgreSQL $v is a relocatable install here: install the tree of cargo pgrx package (README, Install)" >&2; exit 2 ;;
        *) echo "unsupported PostgreSQL major: $v (15 or 17)" >&2; exit 2 ;;
    esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target=${CARGO_TARGET_DIR:-target}
out=$(pwd)/target/debian
mkdir -p "$out"

for v in "${majors[@]}"; do
    if runs_in_trixie_root "$v"; then
        scripts/trixie.sh run scripts/package.sh "$v"
        continue
    fi
    pg_config=$(pg_config_for "$v")
    package=postgresql-$v-session-gc
    deb=$out/${package}_${version}-1_amd64.deb
    echo "== packaging session_gc $version for PostgreSQL $v: $(basename "$deb")" >&2
    unset RUST_BACKTRACE RUST_LIB_BACKTRACE
    cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$v" >/dev/null
    tree=$target/release/session_gc-pg$v
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    cp -a "$tree/." "$staging/"
    # Exactly the server's directories, nothing else from the tree.
    pkglibdir=$("$pg_config" --pkglibdir) sharedir=$("$pg_config" --sharedir)
    unexpected=$(cd "$staging" && find . -type f | grep -v -e "^\.$pkglibdir/session_gc\.so$" \
        -e "^\.$sharedir/extension/session_gc\(\.control\|--.*\.sql\)$" || true)
    if [ -n "$unexpected" ]; then
        echo "the package tree holds files outside the server's directories: $unexpected" >&2
        exit 1
    fi
    # As Debian's packages are: without the symbols a running server does not need (8.5 MB to 7.3 MB).
    strip --strip-unneeded "$staging$pkglibdir/session_gc.so"
    doc=$staging/usr/share/doc/$package
    mkdir -p "$doc" "$staging/DEBIAN"
    cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: session_gc
Source: https://github.com/session-gc/session_gc

Files: *
Copyright: session_gc developers
License: PostgreSQL
 Permission to use, copy, modify, and distribute this software and its documentation for any
 purpose, without fee, and without a written agreement is hereby granted, provided that the
 above copyright notice and this paragraph appear in all copies.
COPYRIGHT
    # The newest glibc symbol version the library needs: the package depends on at least it.
    glibc=$(objdump -T "$staging$pkglibdir/session_gc.so" | grep -o 'GLIBC_[0-9.]*' \
        | sed 's/GLIBC_//' | sort -V | tail -1)
    size=$(du -sk --exclude=DEBIAN "$staging" | cut -f1)
    cat >"$staging/DEBIAN/control" <<CONTROL
Package: $package
Source: session-gc
Version: $version-1
Architecture: amd64
Maintainer: session_gc developers <session-gc@users.noreply.github.com>
Installed-Size: $size
Depends: postgresql-$v, libc6 (>= $glibc), libgcc-s1
Section: database
Priority: optional
Homepage: https://github.com/session-gc/session_gc
Description: expire and purge web session rows for PostgreSQL $v
 session_gc purges expired login sessions inside PostgreSQL in small committed batches that
 never block the application: per-table expiry rules registered once, cleanup() and purge()
 on demand, stats() and metrics(), and a background worker (shared_preload_libraries) that
 purges every database on an interval.
CONTROL
    chmod 0755 "$staging/DEBIAN"
    find "$staging" -path "$staging/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
    find "$staging" -path "$staging/DEBIAN" -prune -o -type f -exec chmod 0644 {} +
    dpkg-deb --root-owner-group -Zxz --build "$staging" "$deb" >/dev/null
    rm -rf "$staging"
    trap - EXIT
    # Relative to the source tree, which is the same inside the trixie root and outside.
    echo "target/debian/$(basename "$deb")"
done
