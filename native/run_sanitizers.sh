#!/bin/sh
# Build native/src + native/tests/*.c with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the C tests (kernels vs their scalar references), then the Python-driven kernels on the fuzz campaign's forward
# inputs (tests/fuzz/sanitize_forward.py); any sanitizer report fails the run (halt_on_error / -fno-sanitize-recover).
# Usage: native/run_sanitizers.sh [--no-openmp]
set -eu
cd "$(dirname "$0")"
CC=${CC:-gcc}
OMP=-fopenmp
[ "${1:-}" = "--no-openmp" ] && OMP=
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for t in tests/*.c; do
    exe="$OUT/$(basename "$t" .c)"
    $CC -std=c99 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
        -Wall -Werror -Iinclude $OMP src/*.c "$t" -o "$exe" -lm
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$exe"
done
# The Python-driven kernels under the same sanitizers, on the fuzz campaign's forward inputs (both backends).
cd ..
python3 tests/fuzz/sanitize_forward.py --per-target "${SANITIZE_FORWARD_INPUTS:-200}"
