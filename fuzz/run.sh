#!/bin/sh
# Runs every fuzz target for a fixed budget, one after another (not part of .ci/run).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 600 s, all four targets)
#
# libFuzzer through cargo-fuzz. Its instrumentation flags (-Z...) need a nightly compiler;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (no nightly can be fetched here).
# Install once: cargo install cargo-fuzz --locked. The corpus grows in fuzz/corpus/<target>/
# (seeded from fuzz/regressions/); crashes land in fuzz/artifacts/<target>/: copy each into
# fuzz/regressions/<target>/ (the unit tests in src/fuzzing.rs replay them) and fix it.
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-client_frame store_record wal_tail http_request}
export RUSTC_BOOTSTRAP=1
# Sanitizer none: the library forbids unsafe code, so AddressSanitizer would find nothing
# that Rust's own checks do not, at twice the cost per execution.
cargo fuzz build --release --sanitizer none 2>&1 | tail -n 1
bin=target/x86_64-unknown-linux-gnu/release
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: $secs s"
    # -rss_limit_mb: the http target holds a whole server (page cache, argon2).
    "$bin/$t" "corpus/$t" "regressions/$t" -max_total_time="$secs" -rss_limit_mb=4096 \
        -timeout=30 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"artifacts/$t.log" 2>&1 || echo "   $t stopped: see fuzz/artifacts/$t.log"
    grep -E "^(stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))|panicked|SUMMARY|^artifact_prefix|Test unit written" "artifacts/$t.log" || true
    grep -E "^#[0-9]+ +(DONE|pulse)" "artifacts/$t.log" | tail -n 1 || true
done
