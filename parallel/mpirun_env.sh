# Sourced by the multi-rank sh_tests (their working directory is the
# runfiles root): mpirun as root inside Bazel's sandbox (TOOLCHAIN.md). Each
# test gets its own TMPDIR and shared-memory directory, so concurrent
# mpiruns do not collide.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export TMPDIR="${TEST_TMPDIR:-$(mktemp -d)}"
MPIRUN_FLAGS=(--oversubscribe --bind-to none --mca btl self,vader
  --mca btl_vader_backing_directory "$TMPDIR" --mca pml ob1 --mca oob_tcp_if_include lo)

# mpi N PROGRAM ARGS...: N ranks, at most MPI_TIMEOUT seconds (mpirun
# ignores SIGTERM, hence -k). MPMD: mpi N A : -np M B.
mpi() {
  local n="$1"
  shift
  timeout -k 5 "${MPI_TIMEOUT:-120}" mpirun -np "$n" "${MPIRUN_FLAGS[@]}" "$@"
}
