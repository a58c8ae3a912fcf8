#!/usr/bin/env bash
# The installed tree (issue 16): meson install --destdir into a temporary
# directory, then the installed greenrun runs a command, compares (it needs
# share/greenshim/compare.py), finds greenshim-dump, and the gdb script and its
# auto-load stub are where gdb looks.
# usage: check_install.sh BUILD_DIR
set -u
build=$1
fails=0
check() {  # DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAIL: $1: expected [$2], got [$3]"; fails=$((fails + 1)); fi
}
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest.log" 2>&1
st=$?; check "meson install --destdir" 0 $st
[ $st = 0 ] || cat "$dest.log"
rm -f "$dest.log"
prefix=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
root=$dest$prefix
greenrun=$root/bin/greenrun
unset GREENSHIM_LIB  # the installed greenrun finds its own library
env -u LD_PRELOAD "$greenrun" -- true; check "installed greenrun -- true" 0 $?
lib=$(env -u LD_PRELOAD "$greenrun" --print-lib)
case $lib in "$root"/*) check "it preloads the installed library" ok ok;;
             *) check "it preloads the installed library" "$root/..." "$lib";; esac
env -u LD_PRELOAD "$greenrun" --compare -n 1 -- true >/dev/null 2>&1; check "installed greenrun --compare -- true" 0 $?
env -u LD_PRELOAD "$greenrun" --dump 999999999 2>/dev/null; check "installed greenrun --dump finds greenshim-dump" 2 $?
[ -f "$root/share/greenshim/greenshim-gdb.py" ]; check "share/greenshim/greenshim-gdb.py installed" 0 $?
for objfile in libgreenshim.so libgreenshim-runtime.so.0; do
  stub=$(find "$root/share/gdb/auto-load" -name "$objfile-gdb.py" 2>/dev/null | head -1)
  [ -n "$stub" ] && grep -q "$prefix/share/greenshim/greenshim-gdb.py" "$stub"
  check "gdb auto-load stub for $objfile sources the script" 0 $?
done
exit $((fails > 0))
