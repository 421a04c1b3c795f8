#!/usr/bin/env bash
# Builds CUDA binaries on a build machine (no GPU needed) and packs them with
# the shared libraries the GPU machine lacks into .gpu/ (git-ignored), ready
# to be carried to a GPU machine that has a CUDA 13 driver and cuBLAS:
#   bash tools/gpu/package.sh //kernels/cuda:cuda_ops_test //launch:kvfold ...
# There: export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64 and run
# .gpu/bin/NAME.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$#" -eq 0 ]; then
  echo "usage: $0 TARGET..." >&2
  exit 2
fi
bazel build --config=cuda -c opt "$@"
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
for target in "$@"; do
  path="bazel-bin/$(echo "${target#//}" | tr ':' '/')"
  cp -L "$path" .gpu/bin/
  # Runfiles the binary reads at run time (tests' data) are not packed.
  ldd "$path" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libgcc_s.so*|\
      libstdc++.so*|libcublas*|libcudart*|libnccl*|libcuda.so*) ;;
      *) cp -Ln "$lib" .gpu/lib/ 2>/dev/null || true ;;
    esac
  done
done
chmod -R u+w .gpu
du -sh .gpu
