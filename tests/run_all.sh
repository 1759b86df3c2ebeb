#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: unit tests (1 process), the same
# binary under mpiexec -n 2 and -n 4, end-to-end runs (tests/e2e/*.sh) and the
# PyTorch reference check. Ends with one line "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/furnace
TESTS=build/bin/furnace_tests
export OMPI_MCA_rmaps_base_oversubscribe=1
pass=0 fail=0 failed=()

run() {  # run NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "build/test-logs/$name.log" 2>&1; then
    pass=$((pass + 1)); echo "PASS  $name ($((SECONDS - t0)) s)"
  else
    fail=$((fail + 1)); failed+=("$name"); echo "FAIL  $name ($((SECONDS - t0)) s): see build/test-logs/$name.log"
    tail -n 30 "build/test-logs/$name.log" | sed 's/^/    /'
  fi
}

mkdir -p build/test-logs
run unit-np1 mpiexec -n 1 "$TESTS"
run unit-np2 mpiexec -n 2 "$TESTS" --gtest_filter='Mpi*:*Mpi*'
run unit-np4 mpiexec -n 4 "$TESTS" --gtest_filter='Mpi*:*Mpi*'
for t in tests/e2e/*.sh; do
  [ -e "$t" ] || continue
  run "e2e-$(basename "$t" .sh)" bash "$t" "$BIN"
done
run reference bash tests/reference/run.sh "$BIN"

echo
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
