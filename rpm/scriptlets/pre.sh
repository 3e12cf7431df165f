#!/bin/sh
# %pre: the pixelgate group and system user, created when missing. Idempotent, so an upgrade
# or a reinstall changes nothing; the user is never deleted (files it owns outlive the package).
# $1 is 1 on install, 2 or more on upgrade. Mirrors /usr/lib/sysusers.d/pixelgate.conf.
getent group pixelgate >/dev/null 2>&1 || groupadd -r pixelgate
getent passwd pixelgate >/dev/null 2>&1 ||
    useradd -r -g pixelgate -d /var/lib/pixelgate -s /sbin/nologin \
        -c "pixelgate email-tracking edge" pixelgate
exit 0
