#!/usr/bin/env bash
# Installs the real servers the test suite starts on 127.0.0.1 (PostgreSQL, Dovecot IMAP + LMTP, Postfix) from
# Debian/Ubuntu packages when they are missing. Their system instances are kept from starting (and stopped and
# disabled if a package started one anyway): the tests run private instances on free ports instead.
# Safe to run again: it does nothing when everything is installed.
set -euo pipefail

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
[ -x /usr/lib/postfix/sbin/master ] || need+=(postfix)

if [ ${#need[@]} -eq 0 ]; then
	echo "install-test-deps: PostgreSQL, Dovecot and Postfix are installed"
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "install-test-deps: missing ${need[*]} and no apt-get here; install them with your package manager" >&2
	exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "install-test-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
	SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${need[*]}"

# policy-rc.d answering 101 tells Debian's maintainer scripts not to start the services they install.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
	"${SUDO[@]}" chmod 755 "$policy"
	created_policy=1
fi
cleanup() {
	if [ -n "$created_policy" ]; then
		"${SUDO[@]}" rm -f "$policy"
	fi
}
trap cleanup EXIT

# Postfix asks how to configure itself; the tests write their own configuration.
echo "postfix postfix/main_mailer_type select No configuration" | "${SUDO[@]}" debconf-set-selections 2>/dev/null || true

"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"

# If a system instance was started anyway (e.g. by systemd presets), stop it and keep it off.
for svc in postgresql dovecot postfix; do
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		"${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif command -v service >/dev/null; then
		"${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
	fi
done
echo "install-test-deps: done"
