#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: unit tests (1 process), the same
# binary under mpiexec -n 2 and -n 4, end-to-end runs (tests/e2e/*.sh) and the
# PyTorch reference check. Ends with one line "N passed, M failed, K skipped" (a test
# exiting 77 could not run on this machine and said why).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/furnace
TESTS=build/bin/furnace_tests
export OMPI_MCA_rmaps_base_oversubscribe=1
pass=0 fail=0 skip=0 failed=()

run() {  # run NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "build/test-logs/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1)); echo "PASS  $name ($((SECONDS - t0)) s)"
  elif [ "$rc" -eq 77 ]; then  # the machine cannot run it (e.g. no network namespaces): said why
    skip=$((skip + 1)); echo "SKIP  $name: $(tail -n 1 "build/test-logs/$name.log")"
  else
    fail=$((fail + 1)); failed+=("$name"); echo "FAIL  $name ($((SECONDS - t0)) s): see build/test-logs/$name.log"
    # failures on ranks other than 0 are printed as "[rank N] ..." lines, often far above the tail
    grep -m 20 '^\[rank [0-9]*\]' "build/test-logs/$name.log" | sed 's/^/    /'
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
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
