#!/usr/bin/env bash
# CI fuzz step (called by .ci/run after the tests): both targets, each for
# FUZZ_SECONDS (default 30, so 60 s in all), starting from the committed seed
# corpus. Fails on a panic, a hang (one input over 10 s), an allocation over
# 256 MiB or an RSS over 2 GiB; the input is then in fuzz/artifacts/<target>/.
# See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    # About a minute on 2 cores; bounded so a stuck download cannot hang CI.
    timeout 600 cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this is a
# stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
for target in read_file session; do
    # New corpus entries go to a scratch directory, not the committed seeds.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    cargo fuzz run "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=256 -rss_limit_mb=2048 \
        -print_final_stats=1
    rm -rf "$scratch"
done
