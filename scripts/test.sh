#!/usr/bin/env bash
# The project's test command: set-up, build, every test; then the bad-input tests again under
# AddressSanitizer + UBSan in a second, small build (build-asan/: only the loader, the CLI and
# the bad-input tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
start=$(date +%s)

scripts/setup.sh
scripts/build.sh

echo "== tests (build/)"
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== bad-input tests under AddressSanitizer + UBSan (build-asan/)"
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
if [ ! -f build-asan/CMakeCache.txt ]; then
  cmake -S . -B build-asan "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Debug -DALPA_SANITIZE=ON \
    -DALPA_GENERATE_TEST_MODELS=OFF -DALPA_TEST_MODELS_DIR="$ROOT/build/test_models"
fi
cmake --build build-asan -j "$(nproc)" --target alpa-plan bad_input_test cli_test plan_cli_test profile_test
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -L badinput -j "$(nproc)"

echo "== scripts/test.sh finished in $(( $(date +%s) - start )) s"
