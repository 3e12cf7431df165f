# runner.sh: runs the test* functions of the suite that sources it, shUnit2-style.
#
# A suite defines testX functions (and setUp, tearDown, oneTimeSetUp if it needs them), then
# sources this file as its last line. The system's shunit2 runs it when there is one (Debian
# and EPEL package it); otherwise the small runner below, which provides the same functions.
# Either way the last line printed is "N passed, N failed", and the exit status is 0 only when
# every test passed. The runner owns oneTimeTearDown. SHUNIT2=builtin forces our runner,
# SHUNIT2=/path/to/shunit2 picks a shunit2.
# shellcheck shell=sh disable=SC2317 # the functions below are called by the suite or shunit2

# --- with the system's shunit2 ----------------------------------------------------------------

# shunit2 exits when it is done, so it runs in a subshell; oneTimeTearDown, which it calls after
# the last test, hands the counts out through a file.
_pg_run_shunit2() {
    _pg_counts=$(mktemp "${TMPDIR:-/tmp}/pg-runner.XXXXXX") || exit 1
    _pg_file=$1
    (
        oneTimeTearDown() {
            echo "${__shunit_testsPassed:-} ${__shunit_testsFailed:-}" >"$_pg_counts"
        }
        set --
        # shellcheck disable=SC2034 # read by shunit2: the file whose test* functions it runs
        SHUNIT_PARENT=$0
        # shellcheck disable=SC1090
        . "$_pg_file"
    )
    _pg_status=$?
    read -r _pg_passed _pg_failed <"$_pg_counts" || :
    rm -f "$_pg_counts"
    case "${_pg_passed:-x}${_pg_failed:-x}" in
    *[!0-9]*)
        echo "runner: shunit2 left no test counts (exit status $_pg_status)"
        _pg_passed=0 _pg_failed=1
        ;;
    esac
    [ "$_pg_status" -ne 0 ] && [ "$_pg_failed" -eq 0 ] && _pg_failed=1
    echo "$_pg_passed passed, $_pg_failed failed"
    [ "$_pg_failed" -eq 0 ] && [ "$_pg_status" -eq 0 ]
    exit
}

# --- without it: the same functions, in plain POSIX shell ---------------------------------------

_pg_fail() {
    echo "ASSERT:$1"
    _pg_test_failed=1
    return 1
}

# assert* take an optional message first, as shunit2's do.
assertEquals() {
    [ $# -eq 3 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    [ "$1" = "$2" ] || _pg_fail "${_pg_msg}expected:<$1> but was:<$2>"
}

assertNotEquals() {
    [ $# -eq 3 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    [ "$1" != "$2" ] || _pg_fail "${_pg_msg}expected not same value:<$1>"
}

assertContains() {
    [ $# -eq 3 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    case "$1" in
    *"$2"*) ;;
    *) _pg_fail "${_pg_msg}expected:<$1> to contain:<$2>" ;;
    esac
}

assertNull() {
    [ $# -eq 2 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    [ -z "$1" ] || _pg_fail "${_pg_msg}expected null but was:<$1>"
}

assertNotNull() {
    [ $# -eq 2 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    [ -n "${1:-}" ] || _pg_fail "${_pg_msg}expected not null"
}

# A condition is a number (0 is true) or shell code, as in shunit2.
_pg_holds() {
    case "$1" in
    '' | *[!0-9]*) (eval "$1") >/dev/null 2>&1 ;;
    *) [ "$1" -eq 0 ] ;;
    esac
}

assertTrue() {
    [ $# -eq 2 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    _pg_holds "$1" || _pg_fail "${_pg_msg}expected true, condition was:<$1>"
}

assertFalse() {
    [ $# -eq 2 ] && { _pg_msg="$1 "; shift; } || _pg_msg=
    if _pg_holds "$1"; then
        _pg_fail "${_pg_msg}expected false, condition was:<$1>"
    fi
}

fail() {
    _pg_fail "${1:-failed}"
}

_pg_run_builtin() {
    command -v setUp >/dev/null 2>&1 || setUp() { :; }
    command -v tearDown >/dev/null 2>&1 || tearDown() { :; }
    command -v oneTimeSetUp >/dev/null 2>&1 || oneTimeSetUp() { :; }
    _pg_tests=$(sed -n 's/^[[:space:]]*\(function[[:space:]]\{1,\}\)\{0,1\}\(test[A-Za-z0-9_]*\)[[:space:]]*().*/\2/p' "$0")
    _pg_passed=0 _pg_failed=0
    oneTimeSetUp || { echo "ASSERT:oneTimeSetUp failed"; _pg_failed=1; }
    for _pg_test in $_pg_tests; do
        echo "$_pg_test"
        _pg_test_failed=0
        setUp
        "$_pg_test" || [ "$_pg_test_failed" -ne 0 ] || _pg_fail "$_pg_test() returned non-zero"
        tearDown
        if [ "$_pg_test_failed" -eq 0 ]; then
            _pg_passed=$((_pg_passed + 1))
        else
            _pg_failed=$((_pg_failed + 1))
        fi
    done
    echo
    echo "Ran $((_pg_passed + _pg_failed)) tests."
    echo "$_pg_passed passed, $_pg_failed failed"
    [ "$_pg_failed" -eq 0 ]
    exit
}

# --- pick one ------------------------------------------------------------------------------------

_pg_shunit2=
case "${SHUNIT2:-}" in
builtin) ;;
'')
    for _pg_candidate in /usr/share/shunit2/shunit2 /usr/bin/shunit2; do
        if [ -r "$_pg_candidate" ]; then
            _pg_shunit2=$_pg_candidate
            break
        fi
    done
    ;;
*) _pg_shunit2=$SHUNIT2 ;;
esac

if [ -n "$_pg_shunit2" ]; then
    echo "runner: $_pg_shunit2"
    _pg_run_shunit2 "$_pg_shunit2"
else
    echo "runner: built-in (no shunit2 found)"
    _pg_run_builtin
fi
