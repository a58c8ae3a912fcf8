# Shared by scripts/test, scripts/demo and scripts/bench: install what is
# missing (Debian packages), configure build/ once, build.
# shellcheck shell=bash

GREENSHIM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages the build, the tests and the demo need.
GREENSHIM_PACKAGES=(
  g++ meson ninja-build pkg-config
  libev-dev libboost-context-dev doctest-dev
  python3.11 libpython3.11-testsuite curl strace procps util-linux
  gdb  # tests/diagnostics: the gdb extension, live and on a core (gcore)
  valgrind  # also <valgrind/valgrind.h>: the runtime registers its stacks with it
  # other allocators, preloaded and linked (tests/threads: alloc-*), and a real
  # program that links jemalloc (tests/integration: redis_benchmark)
  libjemalloc2 libjemalloc-dev libtcmalloc-minimal4 libgoogle-perftools4 libmimalloc2.0
  redis-server redis-tools
  sysbench  # tests/threads tls-sysbench-mutex: a __thread counter per thread
  make  # tests/integration make_jobs: make -j2's jobserver waits in pselect
  liburing-dev libaio-dev  # tests/threads/native: waits in liburing and libaio
)

greenshim_missing_packages() {
  local p missing=()
  for p in "${GREENSHIM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  echo "${missing[@]}"
}

greenshim_ensure_packages() {
  local missing
  missing=$(greenshim_missing_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "greenshim: missing packages; run as root:" >&2
    echo "  apt-get install -y $missing" >&2
    exit 2
  fi
  echo "greenshim: installing $missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >&2
}

greenshim_build() {
  cd "$GREENSHIM_ROOT"
  if [ ! -f build/build.ninja ]; then
    meson setup build >&2
  fi
  ninja -C build >&2
}
