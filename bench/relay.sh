#!/bin/sh
# mailgate relay benchmark against the embedded simulator (see bench/relay.rs).
#
#   bench/relay.sh                  optimised build (cargo bench's profile)
#   bench/relay.sh --dev            debug build (no optimised compile; slower figures)
#   bench/relay.sh -- --clients 50 --messages 2000 --size 10240 --idle 1000 --rounds 3
#
# The email-oauth2-proxy comparison needs `emailproxy` on PATH (or --emailproxy PATH):
#   python3 -m venv /tmp/emailproxy-venv && /tmp/emailproxy-venv/bin/pip install emailproxy
#   PATH=/tmp/emailproxy-venv/bin:$PATH bench/relay.sh
set -eu
cd "$(dirname "$0")/.."
profile=""
if [ "${1:-}" = "--dev" ]; then
    profile="--profile dev"
    shift
fi
[ "${1:-}" = "--" ] && shift
# 1,000 idle connections need more than the usual 1,024 descriptors on both sides.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
command -v emailproxy >/dev/null 2>&1 || echo "note: emailproxy is not on PATH; that comparison will be skipped" >&2
# shellcheck disable=SC2086
exec cargo bench -p mailgate-cli --bench relay $profile -- "$@"
