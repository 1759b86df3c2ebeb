# expect_line CODE PATTERN COMMAND...: the command exits with CODE, and its standard
# error is exactly one line of at most 1000 bytes, containing PATTERN (issue 7: one
# clear line per bad input, once, also under mpiexec, quoting input only in part).
# Standard output (the banner) is not looked at. A command still running after 60 s
# is killed 5 s after its SIGTERM (furnace defers SIGTERM to a step boundary). Needs
# common.sh (fail, SCRATCH).
expect_line() {
  local code=$1 pattern=$2; shift 2
  local err="$SCRATCH/stderr.txt"
  set +e
  timeout -k 5 60 "$@" > /dev/null 2> "$err"; local rc=$?
  set -e
  local lines; lines=$(grep -c '' "$err" || true)
  [ "$rc" -eq "$code" ] || fail "expected exit $code, got $rc from: ${*:1:6} ; stderr: $(head -c 2000 "$err")"
  [ "$(wc -c < "$err")" -le 1000 ] || fail "stderr of ${*:1:6} has $(wc -c < "$err") bytes: $(head -c 400 "$err")"
  [ "$lines" -eq 1 ] || fail "expected one line on stderr, got $lines from: ${*:1:6} ; stderr: $(head -c 2000 "$err")"
  grep -q -- "$pattern" "$err" || fail "expected '$pattern' on stderr of: ${*:1:6}; got: $(head -c 2000 "$err")"
  echo "ok: exit $rc, one line: $(head -c 200 "$err")"
}
