#!/bin/sh
# Smoke tests of an installed, running pixelgate, shUnit2-style: run this file as root (it signs
# URLs with the installed key) once `systemctl enable --now pixelgate` is done and Redis answers.
# It records one open and one click event for account "pixelgate-smoke" in the queue.
# Environment: PIXELGATE_SMOKE_PUBLIC (default http://127.0.0.1:8080), PIXELGATE_SMOKE_ADMIN
# (default http://127.0.0.1:9090), PIXELGATE_SMOKE_WAIT (seconds to wait for /healthz, 30).

# shellcheck disable=SC2317 # the test functions are called by the runner
public=${PIXELGATE_SMOKE_PUBLIC:-http://127.0.0.1:8080}
admin=${PIXELGATE_SMOKE_ADMIN:-http://127.0.0.1:9090}
pixelgate=${PIXELGATE_BIN:-/usr/bin/pixelgate}

# Prints what curl's --write-out format $2 says of one GET of $1, bounded in time.
probe() {
    curl -sS --max-time 5 -o /dev/null -w "$2" "$1"
}

# Waits (bounded) until the edge answers, so that a unit still starting is not a failure.
oneTimeSetUp() {
    deadline=$(($(date +%s) + ${PIXELGATE_SMOKE_WAIT:-30}))
    until curl -fs --max-time 2 -o /dev/null "$public/healthz"; do
        [ "$(date +%s)" -ge "$deadline" ] && break
        sleep 0.2
    done
    return 0
}

sign() {
    "$pixelgate" sign "$@" --account pixelgate-smoke --campaign smoke --message "smoke-$$" \
        --recipient smoke
}

testHealthzSaysOk() {
    assertEquals "/healthz" "ok" "$(curl -sS --max-time 5 "$public/healthz")"
}

testReadyzIs200() {
    assertEquals "/readyz (is Redis up?)" "200" "$(probe "$public/readyz" '%{http_code}')"
}

testAdminTestRoundTripsThroughRedis() {
    value="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    assertEquals "/test?value=" "$value" "$(curl -sS --max-time 5 "$admin/test?value=$value")"
}

testSignedPixelIsAGif() {
    url=$(sign open)
    assertContains "pixel URL" "$url" "$public/o/"
    assertEquals "pixel" "200 image/gif" "$(probe "$url" '%{http_code} %{content_type}')"
}

testSignedClickRedirects() {
    url=$(sign click --url https://example.com/pixelgate-smoke)
    assertContains "click URL" "$url" "$public/c/"
    assertEquals "click" "302 https://example.com/pixelgate-smoke" \
        "$(probe "$url" '%{http_code} %{redirect_url}')"
}

testUnknownPathIs404() {
    assertEquals "unknown path" "404" "$(probe "$public/no-such-path" '%{http_code}')"
}

# shellcheck source=runner.sh
. "$(dirname "$0")/runner.sh"
