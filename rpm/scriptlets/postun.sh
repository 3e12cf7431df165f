#!/bin/sh
# %postun: what %systemd_postun_with_restart does. After an upgrade ($1 >= 1) running units
# restart on the new binary; stopped ones stay stopped. The pixelgate user, /var/lib/pixelgate
# and the signing keys stay after an erase ($1 is 0): they outlive the package on purpose.
# EL9's systemd-update-helper marks the units and its file trigger reloads and restarts them at
# the end of the transaction; elsewhere (EL8) we reload and try-restart here, if systemd runs.
if [ -x /usr/lib/systemd/systemd-update-helper ]; then
    if [ "$1" -ge 1 ]; then
        /usr/lib/systemd/systemd-update-helper mark-restart-system-units \
            pixelgate.service pixelgate-drain.service || :
    fi
elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart pixelgate.service pixelgate-drain.service >/dev/null 2>&1 || :
    fi
fi
exit 0
