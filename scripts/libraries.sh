#!/usr/bin/env bash
# Installs the real session libraries the framework tests drive (tests/tests/libraries.rs), at
# pinned versions, into DIR (a Python venv in DIR/venv, npm packages in DIR/node), idempotently.
# Usage: scripts/libraries.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/libraries.sh DIR}
mkdir -p "$dir"
requirements=tests/libraries/requirements.txt
if ! cmp -s "$requirements" "$dir/venv/requirements.txt" 2>/dev/null; then
    echo "== installing the Python session libraries into $dir/venv"
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet -r "$requirements"
    cp "$requirements" "$dir/venv/requirements.txt"
fi
if ! cmp -s tests/libraries/package.json "$dir/node/package.json" 2>/dev/null \
    || [ ! -d "$dir/node/node_modules" ]; then
    echo "== installing the Node.js session libraries into $dir/node"
    rm -rf "$dir/node"
    mkdir -p "$dir/node"
    cp tests/libraries/package.json "$dir/node/package.json"
    (cd "$dir/node" && npm install --silent --no-audit --no-fund >/dev/null)
fi
