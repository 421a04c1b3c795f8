#!/usr/bin/env bash
# The task generators of tools/tasks (Python, standard library): see tasks_test.py.
exec python3 tests/tasks_test.py -v
