#!/bin/bash
# At 64 px (the quick preset's size), in fp32: one process with 2 threads and one with 1,
# alternated; then two 1-thread processes at once, twice (rates.txt).
S=$(dirname "$0")/step_rate_threads.py
P=${PYTHON:-.venv/bin/python}
for n in 2 1 1 2; do $P $S $n alone 64 fp32; done
for i in 1 2; do echo "two at once, $i:"; ($P $S 1 a 64 fp32 & $P $S 1 b 64 fp32 & wait); done
