#!/bin/sh
# SMTP benchmark against the embedded simulator (see bench/smtp.rs and bench/README.md).
#
#   bench/run.sh                 optimised build (cargo bench's profile)
#   bench/run.sh --dev           debug build (no release compile; slower figures)
#   bench/run.sh -- --messages 1000 --processes 200 --rounds 20
#
# The msmtp comparison needs Debian's msmtp: apt-get install msmtp.
set -eu
cd "$(dirname "$0")/.."
profile=""
if [ "${1:-}" = "--dev" ]; then
    profile="--profile dev"
    shift
fi
[ "${1:-}" = "--" ] && shift
command -v msmtp >/dev/null 2>&1 || echo "note: msmtp is not installed (apt-get install msmtp); that comparison will be skipped" >&2
# shellcheck disable=SC2086
exec cargo bench -p mailgate-cli --bench smtp $profile -- "$@"
