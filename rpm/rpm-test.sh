#!/usr/bin/env bash
# rpm-test.sh: proves the pixelgate RPM by installing it for real; `make rpm-test` runs it.
#
# Builds the package (make rpm), checks the glibc floor, rpmlint, `rpm -qp` queries and
# reproducibility, then installs it into a debootstrapped Debian root (cached as a tarball under
# target/) that a stub package makes look like an EL base, boots that root with systemd-nspawn,
# lets systemd start the unit and runs the installed smoke tests, upgrades (the edited config
# stays, .rpmnew appears) and erases (.rpmsave; user, keys and /var/lib/pixelgate stay).
# The container has its own network namespace (loopback only). Every wait has a deadline, and
# a trap powers the container off and removes the root, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

MAKE=${MAKE:-make}
BINARY=${RPM_BINARY:-target/rpm/pixelgate}
GLIBC_FLOOR=2.28
WORK=target/rpm-test
CACHE=target/rpm-test-cache
ROOT=$PWD/$WORK/root
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the root needs beyond minbase: systemd as PID 1, Redis for the edge, curl for the smoke
# tests, rpm to upgrade and erase from inside, shunit2 to run them as EPEL's shunit2 would,
# procps for /usr/bin/kill (util-linux has it on EL).
ROOT_PACKAGES=systemd,systemd-sysv,redis-server,curl,rpm,shunit2,procps
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

passed=0
failed=0
started=$SECONDS
prep_pid=
nspawn_pid=
leader=

say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }
die() {
    echo "rpm-test: $*" >&2
    exit 1
}

# check DESCRIPTION COMMAND...: one named check; a failure is reported and counted, not fatal.
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
        passed=$((passed + 1))
    else
        echo "FAILED: $what" >&2
        failed=$((failed + 1))
    fi
}

# same EXPECTED COMMAND...: the command's output is exactly EXPECTED.
same() {
    local expected=$1 actual
    shift
    actual=$("$@" 2>&1) || true
    [ "$actual" = "$expected" ] || {
        printf '  expected: %s\n  actual:   %s\n' "$expected" "$actual" >&2
        return 1
    }
}

# contains TEXT FILE-OR-STRING-COMMAND...: the command's output contains TEXT.
contains() {
    local text=$1 actual
    shift
    actual=$("$@" 2>&1) || true
    case "$actual" in
    *"$text"*) ;;
    *)
        printf '  %s\n  does not contain: %s\n' "$actual" "$text" >&2
        return 1
        ;;
    esac
}

# not COMMAND...: the command fails (its output is not shown).
not() { ! "$@" >/dev/null 2>&1; }

# exited PID: the process is gone or a zombie (kill -0 alone succeeds on a zombie).
exited() { [ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }

# until_true SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds or time runs out.
until_true() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# as_root COMMAND...: root is needed for debootstrap, chroot, nspawn; sudo only when not root.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
in_root() { as_root chroot "$ROOT" "$@"; }
inside() { as_root nsenter -t "$leader" -a -- "$@"; }
rpm_root() { as_root rpm --root="$ROOT" --dbpath=/var/lib/rpm "$@"; }

cleanup() {
    local status=$?
    set +e
    if [ -n "$leader" ] && as_root kill -0 "$leader" 2>/dev/null; then
        as_root kill -s RTMIN+4 "$leader"
        until_true 20 exited "$nspawn_pid"
    fi
    if [ -n "$nspawn_pid" ] && ! exited "$nspawn_pid"; then
        as_root kill -TERM "$nspawn_pid"
        until_true 10 exited "$nspawn_pid" || as_root kill -KILL "$nspawn_pid"
    fi
    if [ -n "$prep_pid" ] && kill -0 "$prep_pid" 2>/dev/null; then
        kill -TERM -- "-$prep_pid" 2>/dev/null || kill -TERM "$prep_pid"
    fi
    wait 2>/dev/null
    [ -d "$ROOT" ] && as_root rm -rf --one-file-system "$ROOT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the Debian root, made once and cached as a tarball ----------------------------------------

key=$(printf '%s %s' "$SUITE" "$ROOT_PACKAGES" | sha256sum | cut -c1-12)
tarball=$CACHE/root-$SUITE-$key.tar

prepare_root() {
    [ -f "$tarball" ] && return 0
    local dir=$CACHE/build-$$
    as_root rm -rf --one-file-system "$dir"
    mkdir -p "$CACHE"
    echo "debootstrap $SUITE into $dir (once; cached as $tarball)"
    as_root timeout 900 debootstrap --variant=minbase --include="$ROOT_PACKAGES" \
        "$SUITE" "$dir" "$MIRROR"
    as_root rm -f "$dir"/var/cache/apt/archives/*.deb
    as_root tar --numeric-owner -C "$dir" -cf "$tarball.part" .
    as_root rm -rf --one-file-system "$dir"
    mv "$tarball.part" "$tarball"
    # Roots made for another package list are stale: 300 MB each.
    find "$CACHE" -maxdepth 1 -name 'root-*.tar' ! -path "$tarball" -delete
}

mkdir -p "$WORK"
rm -rf "${WORK:?}"/again "$WORK"/r2 "$WORK"/runner-sample
[ -d "$ROOT" ] && as_root rm -rf --one-file-system "$ROOT"
# debootstrap downloads while the binary compiles.
set -m
prepare_root >"$WORK/prepare-root.log" 2>&1 &
prep_pid=$!
set +m

# ---- build ---------------------------------------------------------------------------------------

say "make rpm (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
"$MAKE" --no-print-directory rpm
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
rpm1=target/rpm/pixelgate-$version-1.x86_64.rpm
rpm2=$WORK/r2/pixelgate-$version-2.x86_64.rpm
[ -f "$rpm1" ] || die "make rpm did not write $rpm1"
# make rpm built the packaging tool; SOURCE_DATE_EPOCH goes to it, never to cargo.
pack() { target/debug/pixelgate-rpm "$@" >/dev/null; }

say "binary: glibc floor $GLIBC_FLOOR and a build id"
newest_glibc=$(objdump -T "$BINARY" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
echo "newest GLIBC_ symbol: $newest_glibc"
check "no glibc symbol newer than $GLIBC_FLOOR" \
    same "$GLIBC_FLOOR" eval "printf '%s\n' '$newest_glibc' '$GLIBC_FLOOR' | sort -V | tail -1"
check "the binary has a GNU build id" contains "Build ID" readelf -n "$BINARY"

say "reproducibility, release 2 with an edited config, the EL-base stub"
pack --out "$WORK/again" package --binary "$BINARY" --release 1
check "two builds with one SOURCE_DATE_EPOCH are identical" cmp "$rpm1" "$WORK/again/${rpm1##*/}"
cp deploy/pixelgate.toml "$WORK/pixelgate.toml.r2"
echo "# Release 2 of the test package ships this line: the upgrade must leave it in .rpmnew." \
    >>"$WORK/pixelgate.toml.r2"
pack --out "$WORK/r2" package --binary "$BINARY" --release 2 --config "$WORK/pixelgate.toml.r2"
pack --out "$WORK" stub
stub=$WORK/el-base-stub-1-1.noarch.rpm

say "rpmlint (filters in rpm/rpmlint.toml, each with its reason)"
lint=$(rpmlint -c rpm/rpmlint.toml "$rpm1" 2>&1) || true
echo "$lint"
check "rpmlint: no errors and no unfiltered warnings" \
    contains " 0 errors, 0 warnings" echo "$lint"

say "rpm -qp queries"
q() { rpm -qp "$@" "$rpm1" 2>/dev/null; }
check "digests" contains "digests OK" rpm -K "$rpm1"
check "name" same "pixelgate-$version-1.x86_64" q --qf '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}'
check "%pre creates the group" contains "getent group pixelgate >/dev/null 2>&1 || groupadd -r pixelgate" q --scripts
check "%pre creates the system user" \
    contains "useradd -r -g pixelgate -d /var/lib/pixelgate -s /sbin/nologin" q --scripts
check "%post makes a key" contains "/usr/bin/pixelgate keygen" q --scripts
check "%preun, %postun handle the units" contains "systemctl try-restart pixelgate.service" q --scripts
check "the config is %config(noreplace)" contains "cn /etc/pixelgate/pixelgate.toml" \
    q --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]'
attrs=$(q --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]')
for want in \
    "-rwxr-xr-x root:root /usr/bin/pixelgate" \
    "-rw-r----- root:pixelgate /etc/pixelgate/pixelgate.toml" \
    "drwxr-x--- root:pixelgate /etc/pixelgate/keys" \
    "drwxr-x--- pixelgate:pixelgate /var/lib/pixelgate" \
    "-rw-r--r-- root:root /usr/lib/systemd/system/pixelgate.service" \
    "-rw-r--r-- root:root /usr/lib/systemd/system/pixelgate-drain.service" \
    "-rw-r--r-- root:root /usr/lib/sysusers.d/pixelgate.conf" \
    "-rwxr-xr-x root:root /usr/share/pixelgate/tests/smoke_test.sh" \
    "-rw-r--r-- root:root /usr/share/doc/pixelgate/LICENSE"; do
    check "file: $want" contains "$want" echo "$attrs"
done
check "license file flagged %license" contains "l /usr/share/doc/pixelgate/LICENSE" \
    q --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]'
requires=$(q --qf '[%{REQUIREFLAGS:deptype} %{REQUIRENAME}\n]')
for want in "manual /bin/sh" "manual libc.so.6(GLIBC_2.28)(64bit)" "pre shadow-utils" \
    "post systemd" "preun systemd" "postun systemd"; do
    check "requires: $want" contains "$want" echo "$requires"
done
# user() and group() are recommended by the rpm crate for owners other than root, and provided
# by the package itself (as sysusers-based EL9 packages do).
check "recommends redis and curl" same $'curl\ngroup(pixelgate)\nredis\nuser(pixelgate)' \
    eval "rpm -qp --recommends '$rpm1' | sort"
check "license and URL" same "Apache-2.0 https://github.com/pixelgate/pixelgate" q --qf '%{LICENSE} %{URL}'
check "a changelog" contains "pixelgate maintainers" q --changelog

say "the smoke runner itself: a failing test fails the suite, under both runners"
sample=$WORK/runner-sample
mkdir -p "$sample"
cp rpm/tests/runner.sh "$sample/"
cat >"$sample/sample_test.sh" <<'SUITE'
#!/bin/sh
testPasses() { assertEquals "same" "a" "a"; assertContains "abc" "b"; }
testFails() { assertEquals "differs" "a" "b"; }
# shellcheck source=/dev/null
. "$(dirname "$0")/runner.sh"
SUITE
runner_fails() {
    local out status
    out=$(SHUNIT2=$1 SHUNIT_COLOR=none sh "$sample/sample_test.sh" 2>&1)
    status=$?
    if [ "$status" -eq 0 ] || [ "$(printf '%s\n' "$out" | tail -1)" != "1 passed, 1 failed" ]; then
        printf '%s\n(exit status %s)\n' "$out" "$status" >&2
        return 1
    fi
}
check "shunit2: exit status 1 and '1 passed, 1 failed'" runner_fails ""
check "built-in runner: exit status 1 and '1 passed, 1 failed'" runner_fails builtin

# ---- install into the root -------------------------------------------------------------------

say "the Debian root (waiting for debootstrap when it is not cached)"
if ! wait "$prep_pid"; then
    prep_pid=
    cat "$WORK/prepare-root.log" >&2
    die "could not prepare the root"
fi
prep_pid=
mkdir -p "$ROOT"
as_root tar --numeric-owner -C "$ROOT" -xpf "$tarball"
# Like EL: units stay disabled unless the admin enables them (EL's 99-default-disable.preset).
echo "disable *" | as_root tee "$ROOT/usr/lib/systemd/system-preset/99-default-disable.preset" >/dev/null
as_root cp "$rpm2" "$ROOT/root/"

say "rpm -i with dependency checks on"
rpm_root --initdb
check "without the EL-base stub, rpm refuses: dependencies are checked" \
    contains "Failed dependencies" rpm_root -i --test "$rpm1"
rpm_root -i "$stub"
rpm_root -i "$rpm1"
check "installed" same "pixelgate-$version-1.x86_64" rpm_root -q pixelgate
check "the user exists in the root" \
    same "pixelgate:/var/lib/pixelgate:/sbin/nologin" in_root sh -c 'getent passwd pixelgate | cut -d: -f1,6,7'
system_uid() { [ "$(in_root id -u pixelgate)" -lt 1000 ]; }
check "... as a system user" system_uid
check "the user does not exist on this host" not getent passwd pixelgate
check "%post made 1.key, 0640 root:pixelgate" \
    same "640 root:pixelgate" in_root stat -c '%a %U:%G' /etc/pixelgate/keys/1.key
check "the key directory is 0750 root:pixelgate" \
    same "750 root:pixelgate" in_root stat -c '%a %U:%G' /etc/pixelgate/keys
check "/var/lib/pixelgate is 0750 pixelgate:pixelgate" \
    same "750 pixelgate:pixelgate" in_root stat -c '%a %U:%G' /var/lib/pixelgate
check "the config is 0640 root:pixelgate" \
    same "640 root:pixelgate" in_root stat -c '%a %U:%G' /etc/pixelgate/pixelgate.toml
check "rpm -V is clean" rpm_root -V pixelgate
check "the preset left pixelgate disabled (EL default)" \
    same disabled as_root systemctl --root="$ROOT" is-enabled pixelgate.service
check "the preset left pixelgate-drain disabled" \
    same disabled as_root systemctl --root="$ROOT" is-enabled pixelgate-drain.service
check "the installed config passes check-config" \
    same "configuration OK" in_root /usr/bin/pixelgate check-config
key_sum=$(in_root sha256sum /etc/pixelgate/keys/1.key)

# ---- boot ------------------------------------------------------------------------------------

say "boot the root with systemd-nspawn (own network namespace)"
# --register=no and --keep-unit: no machined or D-Bus on the host is needed. timeout bounds the
# container's life even if this script is killed.
as_root timeout -k 10 600 systemd-nspawn --quiet --register=no --keep-unit --private-network \
    --machine="pixelgate-rpm-test" -D "$ROOT" --boot >"$WORK/boot.log" 2>&1 &
nspawn_pid=$!
# The container's PID 1 is the first process called systemd below us (timeout, sudo in between).
find_leader() {
    local p=$nspawn_pid c
    for _ in 1 2 3 4; do
        c=$(pgrep -P "$p" | head -1) || return 1
        [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { echo "$c"; return 0; }
        p=$c
    done
    return 1
}
until_true 30 find_leader || { cat "$WORK/boot.log" >&2; die "the container did not start"; }
leader=$(find_leader)
booted() { case $(inside systemctl is-system-running 2>/dev/null) in running | degraded) ;; *) return 1 ;; esac; }
until_true 90 booted || { tail -30 "$WORK/boot.log" >&2; die "the container did not finish booting"; }
echo "booted in $((SECONDS - started))s since start (PID 1 is $leader on this host)"
check "Redis answers inside" until_true 30 inside redis-cli ping

say "systemctl enable --now pixelgate, as docs/packaging.md says"
inside systemctl enable --now pixelgate.service
active() { same active inside systemctl is-active "$1"; }
check "pixelgate.service is active" until_true 30 active pixelgate.service
check "pixelgate-drain.service is neither enabled nor started" \
    same $'disabled\ninactive' inside sh -c 'systemctl is-enabled pixelgate-drain.service; systemctl is-active pixelgate-drain.service'
check "systemd-analyze verify is clean for both units" \
    same "" inside systemd-analyze verify /usr/lib/systemd/system/pixelgate.service \
    /usr/lib/systemd/system/pixelgate-drain.service
main_pid=$(inside systemctl show -p MainPID --value pixelgate.service)
check "the edge runs as pixelgate" same pixelgate inside stat -c %U "/proc/$main_pid"
check "with CAP_NET_BIND_SERVICE only" \
    same "CapEff:	0000000000000400" inside grep CapEff "/proc/$main_pid/status"
check "and no new privileges" same "NoNewPrivs:	1" \
    inside grep NoNewPrivs "/proc/$main_pid/status"

say "the installed smoke tests, with Debian's shunit2 (as EPEL's) and with our runner"
smoke() {
    local log=$WORK/smoke-$1.log
    inside env SHUNIT2="$2" SHUNIT_COLOR=none /usr/share/pixelgate/tests/smoke_test.sh >"$log" 2>&1
    local status=$?
    cat "$log"
    [ "$status" -eq 0 ] && [ "$(tail -1 "$log")" = "6 passed, 0 failed" ]
}
check "smoke tests (shunit2)" smoke shunit2 ""
check "smoke tests (built-in runner)" smoke builtin builtin

say "systemctl reload (SIGHUP reloads the keys)"
reload_pid=$(inside systemctl show -p MainPID --value pixelgate.service)
inside systemctl reload pixelgate.service
# shellcheck disable=SC2016 # expanded inside the container
check "reload kept the same process, still active" \
    same "active $reload_pid" inside sh -c 'echo "$(systemctl is-active pixelgate.service) $(systemctl show -p MainPID --value pixelgate.service)"'

say "port 80 without root: the ambient capability at work"
inside mkdir -p /etc/systemd/system/pixelgate.service.d
printf '[Service]\nEnvironment=PIXELGATE_LISTEN=127.0.0.1:80\n' |
    inside tee /etc/systemd/system/pixelgate.service.d/port80.conf >/dev/null
inside systemctl daemon-reload
inside systemctl restart pixelgate.service
check "/healthz answers on port 80" until_true 20 inside curl -fsS --max-time 2 http://127.0.0.1:80/healthz
inside rm -r /etc/systemd/system/pixelgate.service.d
inside systemctl daemon-reload
inside systemctl restart pixelgate.service
until_true 20 inside curl -fsS --max-time 2 http://127.0.0.1:8080/healthz || true

# ---- upgrade ---------------------------------------------------------------------------------

say "upgrade to release 2 with an edited config"
echo "# edited by the operator" | inside tee -a /etc/pixelgate/pixelgate.toml >/dev/null
old_pid=$(inside systemctl show -p MainPID --value pixelgate.service)
inside rpm --dbpath=/var/lib/rpm -U "/root/${rpm2##*/}"
check "release 2 is installed" same "pixelgate-$version-2.x86_64" inside rpm --dbpath=/var/lib/rpm -q pixelgate
check "the operator's edit survived" contains "# edited by the operator" inside cat /etc/pixelgate/pixelgate.toml
check "the new default is in .rpmnew" \
    contains "# Release 2 of the test package" inside cat /etc/pixelgate/pixelgate.toml.rpmnew
restarted() {
    local pid
    pid=$(inside systemctl show -p MainPID --value pixelgate.service)
    [ "$pid" != 0 ] && [ "$pid" != "$old_pid" ] && active pixelgate.service
}
check "%postun restarted the running edge" until_true 30 restarted
check "the key was kept" same "$key_sum" inside sha256sum /etc/pixelgate/keys/1.key
check "pixelgate-drain.service still not started" same inactive inside systemctl is-active pixelgate-drain.service
check "smoke tests after the upgrade" smoke upgraded ""

# ---- erase -----------------------------------------------------------------------------------

say "erase"
# State the service wrote (the spool, a jsonl sink) is not the package's: rpm leaves the
# directory because it is not empty. (An empty /var/lib/pixelgate, with no state, goes.)
inside setpriv --reuid=pixelgate --regid=pixelgate --init-groups \
    sh -c 'echo "{}" >/var/lib/pixelgate/events.jsonl'
inside rpm --dbpath=/var/lib/rpm -e pixelgate
check "the package is gone" not inside rpm --dbpath=/var/lib/rpm -q pixelgate
check "%preun stopped the edge" same inactive inside systemctl is-active pixelgate.service
check "the unit files are gone" not inside ls /usr/lib/systemd/system/pixelgate.service \
    /usr/lib/systemd/system/pixelgate-drain.service
check "the unit is no longer enabled" not inside ls /etc/systemd/system/multi-user.target.wants/pixelgate.service
check "the edited config is saved as .rpmsave" \
    contains "# edited by the operator" inside cat /etc/pixelgate/pixelgate.toml.rpmsave
check "/var/lib/pixelgate and its state stay" same $'750 pixelgate:pixelgate\n644 pixelgate:pixelgate' \
    inside stat -c '%a %U:%G' /var/lib/pixelgate /var/lib/pixelgate/events.jsonl
check "the user stays" same pixelgate inside sh -c 'getent passwd pixelgate | cut -d: -f1'
check "the key stays" same "$key_sum" inside sha256sum /etc/pixelgate/keys/1.key

say "power off"
# SIGRTMIN+4 asks systemd for a clean poweroff, without going through logind.
as_root kill -s RTMIN+4 "$leader"
check "the container powered off" until_true 30 exited "$nspawn_pid"
leader=
check "systemd-nspawn exited 0" wait "$nspawn_pid"
nspawn_pid=

echo
echo "rpm-test took $((SECONDS - started))s"
echo "rpm-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
