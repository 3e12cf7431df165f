#!/bin/sh
# %post: a signing key on first need, then what %systemd_post does.
# $1 is 1 on install, 2 or more on upgrade.

# The edge refuses to start without a key. Make /etc/pixelgate/keys/1.key when the directory
# holds no ID.key yet (never on top of an operator's keys): root writes it, the pixelgate group
# reads it, nobody else does (pixelgate refuses key files that every user can read).
keys=/etc/pixelgate/keys
have_key=no
for f in "$keys"/*.key; do
    [ -e "$f" ] && have_key=yes
done
if [ "$have_key" = no ] && [ -d "$keys" ]; then
    tmp="$keys/.1.key.new"
    rm -f "$tmp"
    if (umask 077 && /usr/bin/pixelgate keygen >"$tmp") &&
        chown root:pixelgate "$tmp" && chmod 0640 "$tmp"; then
        mv -f "$tmp" "$keys/1.key"
    else
        rm -f "$tmp"
        echo "pixelgate: could not make $keys/1.key; run: pixelgate keygen > $keys/1.key" >&2
    fi
fi

# %systemd_post: apply the presets on first install only (EL's default preset leaves both units
# disabled: the operator enables them). EL9 has systemd-update-helper; EL8 runs systemctl.
if [ "$1" -eq 1 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper install-system-units \
            pixelgate.service pixelgate-drain.service || :
    else
        systemctl --no-reload preset pixelgate.service pixelgate-drain.service >/dev/null 2>&1 || :
    fi
fi
exit 0
