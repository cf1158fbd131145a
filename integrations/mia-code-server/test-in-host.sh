#!/usr/bin/env bash
# Proves the integration in the real host. Takes mia-code-server at the commit the patch is for,
# applies the patch with `git apply`, type-checks the fork with its own tsconfig and lock, runs the
# fork's unit tests of its narrative module, then runs that module inside code-server from npm, on
# each Node version asked for, and checks everything host-checks.js lists. Prints "N passed,
# N failed" per Node version.
#
#   bash integrations/mia-code-server/test-in-host.sh
#
# Environment:
#   MIA_CODE_SERVER_GIT  where to clone the fork from (a URL or a local git directory);
#                        default https://github.com/miadisabelle/mia-code-server.git
#   MIA_HOST_NODES       Node major versions to run code-server on; default "24 22"
#   MIA_HOST_CACHE       where Node and code-server are installed once (about 800 MB);
#                        default ~/.cache/mia-narrative-session/host
#
# Exit status: 0 all passed; 1 a check failed; 3 the fork could not be cloned (nothing was checked).
#
# The fork's own build needs its VS Code submodule, which is not public, so the fork's narrative
# module (and the three-universe module it uses) runs inside stock code-server, mounted as the
# patched src/node/routes/index.ts mounts it, and with the patched src/node/main.ts's awaited
# shutdown: a scratch copy of code-server's out/ gets those two edits, and nothing else changes.
# code-server is installed with --ignore-scripts: its postinstall builds VS Code's native modules,
# which the editor needs and the narrative routes do not.
set -euo pipefail

FORK_COMMIT=c2df3994771ae5248a3e1bbc98c2b34f4672a12c
CODE_SERVER_VERSION=4.139.1

HERE="$(cd "$(dirname "$0")" && pwd)"
KIT="$(cd "$HERE/../.." && pwd)"
FORK_GIT="${MIA_CODE_SERVER_GIT:-https://github.com/miadisabelle/mia-code-server.git}"
NODES="${MIA_HOST_NODES:-24 22}"
CACHE="${MIA_HOST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mia-narrative-session/host}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mia-host.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; }
die() { printf 'test-in-host: %s\n' "$*" >&2; exit 1; }

if ! compgen -G "$KIT/mia-narrative-session.*.node" >/dev/null; then
  die "no built addon in $KIT: run npm install there first"
fi

step "mia-code-server at ${FORK_COMMIT:0:8} from $FORK_GIT"
if ! GIT_TERMINAL_PROMPT=0 git clone --quiet --no-checkout "$FORK_GIT" "$WORK/fork" 2>"$WORK/clone.log"; then
  cat "$WORK/clone.log" >&2
  echo "test-in-host: cannot clone the fork; nothing was checked" >&2
  exit 3
fi
git -C "$WORK/fork" -c advice.detachedHead=false checkout --quiet "$FORK_COMMIT"

step "git apply"
for patch in "$HERE"/*.patch; do
  git -C "$WORK/fork" apply --check "$patch"
  git -C "$WORK/fork" apply "$patch"
  echo "applied $(basename "$patch")"
done

step "type-check the fork with its tsconfig (npm ci of its lock, TypeScript $(cd "$WORK/fork" && node -p 'require("./package-lock.json").packages["node_modules/typescript"].version'))"
(cd "$WORK/fork" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
# The package as a host installs it: by name, from node_modules.
ln -s "$KIT" "$WORK/fork/node_modules/mia-narrative-session"
(cd "$WORK/fork" && node_modules/.bin/tsc -p tsconfig.json --noEmit)
echo "tsc -p tsconfig.json: no errors"
(cd "$WORK/fork" && node_modules/.bin/tsc -p tsconfig.json --outDir "$WORK/fork-out")

step "the fork's own unit tests of its narrative module (its jest, from test/)"
(cd "$WORK/fork/test" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
# pipefail: jest's status is the pipeline's.
(cd "$WORK/fork" && test/node_modules/.bin/jest --testRegex './test/unit/node/mia/narrative/.*ts' --coverage=false \
  --forceExit 2>&1 | grep -E '^(PASS|FAIL)|^Tests:')

# Node and code-server, installed once into the cache.
node_bin() {
  local major="$1" dir="$CACHE/node$1"
  if [ ! -x "$dir/node_modules/node/bin/node" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "node@$major" >/dev/null
  fi
  echo "$dir/node_modules/node/bin/node"
}

CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
if [ ! -f "$CS_DIR/.installed" ]; then
  step "install code-server $CODE_SERVER_VERSION from npm (once; a few minutes)"
  node24="$(node_bin 24)"
  rm -rf "$CS_DIR" && mkdir -p "$CS_DIR"
  PATH="$(dirname "$node24"):$PATH" npm install --prefix "$CS_DIR" --ignore-scripts --no-audit --no-fund \
    --loglevel=error "code-server@$CODE_SERVER_VERSION" >/dev/null
  touch "$CS_DIR/.installed"
fi

step "a scratch code-server with the patched narrative module mounted"
HOST="$WORK/code-server"
mkdir -p "$HOST"
for entry in "$CS_DIR/node_modules/code-server"/*; do
  name="$(basename "$entry")"
  case "$name" in
    out | package.json) cp -r "$entry" "$HOST/$name" ;;
    *) ln -s "$entry" "$HOST/$name" ;;
  esac
done
ln -s "$CS_DIR/node_modules" "$HOST/node_modules"
cp -r "$WORK/fork-out/node/mia" "$HOST/out/node/mia"
mkdir -p "$HOST/out/node_modules"
ln -s "$KIT" "$HOST/out/node_modules/mia-narrative-session"
node "$HERE/mount-in-code-server.js" "$HOST/out/node"

status=0
for major in $NODES; do
  bin="$(node_bin "$major")"
  step "code-server $CODE_SERVER_VERSION on Node $("$bin" --version)"
  start=$(date +%s)
  node "$HERE/host-checks.js" --node "$bin" --code-server "$HOST/out/node/entry.js" || status=1
  echo "(Node $major: $(($(date +%s) - start)) s)"
done
exit $status
