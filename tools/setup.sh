#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for kvfold (idempotent: installs only
# what is missing), builds, and then:
#   tools/setup.sh run    runs the main job on the built-in default
#   tools/setup.sh test   runs the whole test suite and prints a summary
#   tools/setup.sh        only sets up and builds
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(bazel-bootstrap bazel-rules-java bazel-platforms libabsl-dev
  libprotobuf-dev protobuf-compiler libopenmpi-dev openmpi-bin
  libopenblas-dev nlohmann-json3-dev libgtest-dev libgmock-dev g++ python3)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

BAZEL=(bazel)
"${BAZEL[@]}" build //... >&2

case "${1:-}" in
  run)
    # The main job on the built-in default: `kvfold demo` runs `kvfold run`
    # through mpirun (2 ranks) over the bundled documents and questions
    # (tools/demo) with the built-in model (tools/model).
    shift
    exec bazel-bin/launch/kvfold demo "$@"
    ;;
  test)
    shift
    rc=0
    # Fresh logs, so the summary counts only this run's tests.
    rm -rf "$("${BAZEL[@]}" info bazel-testlogs 2>/dev/null)"
    log=$(mktemp)
    "${BAZEL[@]}" test //... "$@" 2>&1 | tee "$log" || rc=$?
    python3 tools/test_summary.py bazel-testlogs "$log" || rc=1
    rm -f "$log"
    exit $rc
    ;;
  "") ;;
  *) echo "usage: tools/setup.sh [run|test]" >&2; exit 2 ;;
esac
