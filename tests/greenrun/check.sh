#!/usr/bin/env bash
# greenrun's contract: help/version, bad configuration rejected in one line
# with status 2, the library's own warning-and-default on bad values, exit
# status and death by signal passed through.
# usage: check.sh GREENRUN
set -u
greenrun=$1
fails=0
check() {  # DESCRIPTION EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAIL: $1: expected [$2], got [$3]"; fails=$((fails + 1)); fi
}
"$greenrun" --help | grep -q '^usage: greenrun'; check "--help prints usage" 0 $?
# The environment part comes from the table of settings, with the threads'
# real default stack (it once said 256K, the runtime greenlets' alone).
"$greenrun" --help | tr -s '\n ' '  ' | grep -q 'default 1M for threads'; check "--help prints the table's environment part" 0 $?
"$greenrun" --version | grep -q '^greenrun [0-9]'; check "--version" 0 $?
for bad in "GREENSHIM_STACK_SIZE=1k" "GREENSHIM_STACK_SIZE=lots" "GREENSHIM_STACK_SIZE=" "GREENSHIM_DISABLE=maybe" \
           "GREENSHIM_INHERIT=2" "GREENSHIM_FILE_IO=fast" "GREENSHIM_STACK_SIZE=99999999999999999999" \
           "GREENSHIM_MONITOR=fast" "GREENSHIM_MONITOR=-5" "GREENSHIM_MONITOR=99999999" "GREENSHIM_TRACE=nope" \
           "GREENSHIM_TRACE=sync," "GREENSHIM_STATS=maybe" \
           "GREENSHIM_FAULTS=1" "GREENSHIM_FAULTS=1:0" "GREENSHIM_FAULTS=1:1.5" "GREENSHIM_FAULTS=x:0.1" \
           "GREENSHIM_FAULTS=1:1e-3" "GREENSHIM_FAULTS=18446744073709551616:0.5" "GREENSHIM_FAULTS_REPORT=2"; do
  err=$(env "$bad" "$greenrun" -- true 2>&1); st=$?
  [ "$bad" = "GREENSHIM_STACK_SIZE=" ] && { check "$bad (empty) means default" 0 $st; continue; }
  check "$bad rejected with status 2" 2 $st
  check "$bad: one line on stderr" 1 "$(printf '%s\n' "$err" | wc -l)"
done
for good in "GREENSHIM_FAULTS=42:0.05" "GREENSHIM_FAULTS=18446744073709551615:1" "GREENSHIM_FAULTS=0:.5"; do
  env "$good" "$greenrun" -- true; check "$good accepted" 0 $?
done
"$greenrun" --no-such-option -- true 2>/dev/null; check "unknown option: status 2" 2 $?
"$greenrun" -- /no/such/program 2>/dev/null; check "missing command: status 2" 2 $?
lib=$("$greenrun" --print-lib)
out=$(GREENSHIM_STACK_SIZE=garbage GREENSHIM_DISABLE=maybe LD_PRELOAD=$lib /bin/echo ran 2>&1)
check "library: runs on bad values" 1 "$(printf '%s\n' "$out" | grep -c '^ran$')"
check "library: warns once per bad variable" 2 "$(printf '%s\n' "$out" | grep -c '^greenshim: ignoring')"
out=$(GREENSHIM_FAULTS=7:1.5 GREENSHIM_FAULTS_REPORT=1 LD_PRELOAD=$lib /bin/echo ran 2>&1)
check "library: bad GREENSHIM_FAULTS warned about once" 1 "$(printf '%s\n' "$out" | grep -c '^greenshim: ignoring GREENSHIM_FAULTS=7:1.5')"
check "library: bad GREENSHIM_FAULTS leaves injection off" 0 "$(printf '%s\n' "$out" | grep -c 'faults injected')"
out=$(GREENSHIM_FAULTS=7:0.5 GREENSHIM_FAULTS_REPORT=1 LD_PRELOAD=$lib /bin/true 2>&1)  # (echo closes its stderr)
check "library: GREENSHIM_FAULTS_REPORT=1 prints the counts at exit" 1 \
  "$(printf '%s\n' "$out" | grep -cE '^greenshim: faults injected: eagain=[0-9]+ eintr=[0-9]+ short=[0-9]+ wake=[0-9]+$')"
"$greenrun" -- sh -c 'exit 7'; check "exit status passed through" 7 $?
bash -c "\"$greenrun\" -- sh -c 'kill -TERM \$\$'"; check "death by SIGTERM seen as 128+15" 143 $?
out=$("$greenrun" -- sh -c 'echo $LD_PRELOAD' | tr ':' '\n' | grep -c libgreenshim.so); check "LD_PRELOAD holds the library" 1 "$out"
out=$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 "$greenrun" -- sh -c 'echo $LD_PRELOAD'); case $out in /lib/x86_64-linux-gnu/libc.so.6:*libgreenshim.so) r=0;; *) r=1;; esac
check "appended to an existing LD_PRELOAD" 0 $r
# The fast start (shim/greenrun_fast.c): `greenrun [--] CMD` with no
# GREENSHIM_* variable is exec'd before libc starts; it must do exactly what
# greenrun.cpp's main does (which a GREENSHIM_* variable, even empty, makes
# run): the same environment, in the same order, for the command.
# (Both through a pipe: bash lowers SHLVL for a command it execs in place.)
fast() { env -u GREENSHIM_LIB "$greenrun" "$@"; }
fast_env() { fast "$@" | grep -v '^GREENSHIM_STACK_SIZE='; }
full_env() { env -u GREENSHIM_LIB GREENSHIM_STACK_SIZE= "$greenrun" "$@" | grep -v '^GREENSHIM_STACK_SIZE='; }
check "fast start: the command's environment is main's" "$(full_env -- env)" "$(fast_env -- env)"
check "fast start, no --: the same" "$(full_env env)" "$(fast_env env)"
check "fast start, LD_PRELOAD set: the same" "$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 full_env -- env)" \
  "$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 fast_env -- env)"
check "fast start, LD_PRELOAD empty: the same" "$(LD_PRELOAD= full_env -- env)" "$(LD_PRELOAD= fast_env -- env)"
fast -- sh -c 'exit 7'; check "fast start: exit status passed through" 7 $?
fast -- /no/such/program 2>/dev/null; check "fast start: missing command: status 2" 2 $?
fast no-such-program-in-path 2>/dev/null; check "fast start: command not in PATH: status 2" 2 $?
script=$(mktemp); printf 'echo "script ran: $0"\n' >"$script"; chmod +x "$script"
check "fast start: a script without #! runs with sh, as execvp does" "script ran: $script" "$(fast "$script")"
rm -f "$script"
# Taken: no libc start-up (brk, arch_prctl) in greenrun's image before the
# command's exec.
if command -v strace >/dev/null; then
  log=$(mktemp)
  env -u GREENSHIM_LIB strace -qq -o "$log" "$greenrun" -- true
  before=$(awk '/^execve\(/ { n++; next } n == 1' "$log" | grep -cE '^(brk|arch_prctl)\(')
  check "fast start: the command exec'd before libc started" 0 "$before"
  rm -f "$log"
fi
echo "$fails failed"
[ $fails -eq 0 ]
