#!/bin/sh
# %preun: what %systemd_preun does. On erase ($1 is 0) the units are disabled, and stopped when
# systemd is running (PID 1 is touched only when /run/systemd/system exists, so an install
# into a chroot or an image never talks to the host's systemd). An upgrade ($1 >= 1) does nothing.
if [ "$1" -eq 0 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper remove-system-units \
            pixelgate.service pixelgate-drain.service || :
    elif [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now pixelgate.service pixelgate-drain.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable pixelgate.service pixelgate-drain.service >/dev/null 2>&1 || :
    fi
fi
exit 0
