#!/usr/bin/env bash
# Mutation testing of the Rust core with cargo-mutants (`cargo install cargo-mutants`).
#
# cargo-mutants changes one thing at a time in the code (a `<` into `<=`, a function body into
# `Ok(())`, a `&&` into `||`) and runs the tests against each change: a change no test notices (a
# "missed" mutant) is code whose behaviour nothing checks. docs/mutation/README.md says how to
# read the results (each missed mutant needs a test that notices it, or a line saying why not).
#
#   npm run mutants:rust                      every core file, most important first
#   scripts/mutants.sh src/journal.rs ...     only these files
#   SUITE=all MUTANTS_ARGS=--iterate TIMEOUT=600 scripts/mutants.sh src/journal.rs
#                                             the mutants a first run did not catch, again, against
#                                             every test suite (cargo test without a selection)
#
# Each file runs with the test suites that cover it (below), not the whole `cargo test`: the whole
# suite takes minutes a mutant. Results go to target/mutants.out/<file>/mutants.out/ (outcomes.json,
# caught.txt, missed.txt, timeout.txt, unviable.txt; one log a mutant under log/). Slow: about 1 to 3 minutes
# a mutant on one core, several hours for every file; it is not run in CI.
#
# Environment:
#   JOBS               mutants built and tested at once (default 1: each build takes every core)
#   TIMEOUT            seconds a mutant's tests may run before it counts as a timeout (default 180)
#   CARGO_TARGET_DIR   where the mutated copies build (default target/mutants)
#   MUTANTS_OUT        where the results go (default target/mutants.out)
#   SUITE              test targets to use instead of the file's selection below (`lib store ...`),
#                      or `all` for every one
#   MUTANTS_ARGS       more options for cargo mutants (for instance `--iterate`, `--re clock`)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "cargo-mutants is not installed: cargo install cargo-mutants" >&2
  exit 2
fi

jobs="${JOBS:-1}"
timeout="${TIMEOUT:-180}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/mutants}"
# No debug info: linking a dozen test binaries a mutant is most of a build's time.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
# The merge laws are properties: 64 random cases each instead of 256 (PROPTEST_CASES overrides).
export PROPTEST_CASES="${PROPTEST_CASES:-64}"

# The test targets that exercise each file: the unit tests (lib) and the integration suites that
# catch most of what breaks there, chosen to keep a mutant under about a minute. Only these are
# built and run for each mutant (cargo-mutants builds every target otherwise).
targets_for() {
  case "$1" in
    src/journal.rs) echo lib journal_format file_backend file_guards damaged_files ;;
    src/store/file.rs) echo lib file_backend file_guards special_files damaged_files cleanup ;;
    src/clock.rs) echo lib clock clock_values clock_skew ;;
    src/merge.rs) echo lib merge_laws ;;
    src/store/disk.rs) echo lib file_backend faults special_files disk_full cleanup ;;
    src/paths.rs) echo lib file_backend cleanup ;;
    src/cleanup.rs) echo lib cleanup ;;
    *)
      echo "no test selection for $1: add one to scripts/mutants.sh" >&2
      return 1 ;;
  esac
}

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(src/journal.rs src/store/file.rs src/clock.rs src/merge.rs src/store/disk.rs src/paths.rs src/cleanup.rs)
fi

status=0
for file in "${files[@]}"; do
  selection=()
  targets="${SUITE:-$(targets_for "$file")}"
  [ "$targets" = all ] || for target in $targets; do
    if [ "$target" = lib ]; then selection+=(--cargo-arg=--lib); else selection+=("--cargo-arg=--test=$target"); fi
  done
  out="${MUTANTS_OUT:-target/mutants.out}/$(basename "$file" .rs)"
  mkdir -p "$out"
  echo "== $file: ${selection[*]}"
  # Exit status 2 means "some mutants were missed", 3 "some timed out": the report says which.
  # shellcheck disable=SC2086
  cargo mutants --file "$file" --jobs "$jobs" --timeout "$timeout" --build-timeout 900 \
    --output "$out" --no-shuffle "${selection[@]}" ${MUTANTS_ARGS:-} || status=$?
done
exit "$status"
