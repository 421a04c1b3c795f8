# Sourced by the fault tests of `kvfold run` (fault_loop_test.sh,
# hang_test.sh); their working directory is the runfiles root.

# answers FILE: the answers of a run's output, sorted by id; fails when the
# file is broken or holds a job twice (tests/run_answers.py).
answers() { python3 tests/run_answers.py "$1"; }

# make_jobs FILE N PREFIX QUESTIONS TOKENS: N jobs with ids PREFIX1..N, short
# documents, QUESTIONS (JSON: lists of ids) and TOKENS new tokens each.
make_jobs() {
  local file="$1" n="$2" prefix="$3" questions="$4" tokens="$5"
  : >"$file"
  for i in $(seq 1 "$n"); do
    printf '{"id": "%s%d", "document_ids": [1, %d, 77, %d], "question_ids": %s, ' \
      "$prefix" "$i" $((i + 3)) $((i + 50)) "$questions" >>"$file"
    printf '"max_new_tokens": %d, "ignore_eos": true}\n' "$tokens" >>"$file"
  done
}

# kvfold_processes TEXT: the kvfold rank processes whose command line
# contains TEXT (not mpirun, whose arguments match too).
kvfold_processes() {
  for p in $(pgrep -x kvfold); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$1" && echo "$p"
  done
}
