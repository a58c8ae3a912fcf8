#!/usr/bin/env bash
# 100 concurrent lookups against a DNS server that answers after 1 s, under
# greenrun: they must run side by side (about 1 s), not one after another.
# The test's own resolv.conf is bind-mounted in a private mount namespace.
#
# usage: run.sh GREENRUN RESOLVE_MANY [N]
set -euo pipefail
greenrun=$1 resolver=$2 n=${3:-100}
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
  echo "SKIP: needs root and unshare -m (private mount namespace)"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'nameserver 127.0.0.53\noptions attempts:1 timeout:10\n' >"$work/resolv.conf"

exec unshare -m bash -c '
  set -euo pipefail
  mount --bind "$1/resolv.conf" /etc/resolv.conf
  python3 "$2/slow_dns.py" 127.0.0.53 53 1.0 >"$1/dns.out" &
  dns=$!
  trap "kill $dns 2>/dev/null || true" EXIT
  for _ in $(seq 1 200); do grep -q ready "$1/dns.out" 2>/dev/null && break; sleep 0.05; done
  grep -q ready "$1/dns.out" || { echo "slow DNS server did not start"; exit 1; }
  out=$("$3" -- "$4" "$5" .slow.test)
  echo "greenrun: $out"
  secs=$(echo "$out" | awk "/^resolved/ { print \$4 }")
  echo "$out" | grep -q "^resolved $5/$5 " || { echo "FAIL: not every name resolved"; exit 1; }
  # One lookup takes 1 s; side by side they take about that, one by one $5 s.
  awk -v s="$secs" "BEGIN { exit !(s >= 0.9 && s < 3.0) }" || { echo "FAIL: took $secs s, expected about 1 s"; exit 1; }
  echo "ok: $5 lookups of 1 s each took $secs s together"
' run "$work" "$here" "$greenrun" "$resolver" "$n"
