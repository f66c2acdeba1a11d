#!/usr/bin/env bash
# Runs each libFuzzer harness for SECONDS: fuzz/run.sh BUILD SECONDS TARGET...
# (make fuzz calls it). Each target starts from its seeds: small files of the
# project's own tests (listed below), fuzz/corpus/<target>/ and the inputs
# that once found a bug (tests/data/fuzz_regressions/<target>/, which must
# all pass first). What a run learns stays in BUILD/corpus/<target>/ for the
# next; a crash, leak, hang (a single input over 10 s), out-of-memory (over
# 2 GB) or sanitizer report stops that target, its input saved under
# BUILD/artifacts/<target>/. Prints executions and coverage per target.
set -uo pipefail
build=$1 seconds=$2
shift 2
export TUNE_TEST_DATA=tests/data OMP_NUM_THREADS=1
# The targets' files: a process that crashes leaves its folder here, not in /tmp.
export TMPDIR=$build/tmp
mkdir -p "$TMPDIR"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1

# Seeds from the tests, and the longest input worth trying, per target.
seeds() {
    case $1 in
    config) ls tests/data/config/*.yml configs/*.yml ;;
    data_json) ls tests/data/data/alpaca.jsonl tests/data/data/sharegpt.json tests/data/data/export.jsonl \
                  tests/data/tokenizer/invalid_utf8.jsonl datasets/excel_expert/eval.jsonl \
                  datasets/excel_expert/eval.sharegpt.json ;;
    data_llama2) ls tests/data/data/llama2.txt datasets/excel_expert/eval.llama2.txt ;;
    safetensors) ls tests/data/model_load/sharded_f16/*.safetensors tests/data/model_load/convert.safetensors \
                    tests/data/tiny/peft_adapter/adapter_model.safetensors ;;
    safetensors_index) ls tests/data/model_load/sharded_f16/model.safetensors.index.json ;;
    gguf) ls tests/data/gguf/*.gguf tests/data/tokenizer/gguf/*.gguf ;;
    tokenizer_json) ls tests/data/tiny/tokenizer/tokenizer.json tests/data/tokenizer/subword_*/tokenizer.json \
                       tests/data/tokenizer/sp_*/tokenizer.json ;;
    tokenizer_config) ls tests/data/*/*/tokenizer_config.json tests/data/tiny/*/generation_config.json ;;
    encode) ls tests/data/tokenizer/invalid_utf8.jsonl ;;
    jinja | chat_template) ls tests/data/jinja/templates/*.jinja ;;
    peft_config) ls tests/data/tiny/peft_adapter/adapter_config.json tests/data/smollm2/adapter/adapter_config.json ;;
    model_config) ls tests/data/tiny/*/config.json tests/data/model_load/*/config.json tests/data/plan/*/config.json ;;
    esac
}
max_len() {
    case $1 in
    encode) echo 4096 ;;
    config | jinja | chat_template | peft_config | tokenizer_config | safetensors_index | model_config) echo 16384 ;;
    gguf | tokenizer_json) echo 131072 ;;
    *) echo 65536 ;;
    esac
}

failed=()
rows=()
for t in "$@"; do
    bin=$build/harness/$t corpus=$build/corpus/$t artifacts=$build/artifacts/$t/ log=$build/logs/$t.log
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    dirs=("$corpus")
    for d in fuzz/corpus/$t tests/data/fuzz_regressions/$t; do [ -d "$d" ] && dirs+=("$d"); done
    list=$(seeds "$t" | paste -sd, -)
    echo "== fuzz $t: ${seconds}s"
    "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts" ${list:+-seed_inputs="$list"} "${dirs[@]}" \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1 | awk '{print $2, $4, $6}')
    read -r edges features units <<<"${cov:-- - -}"
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        grep -E 'ERROR|SUMMARY|fuzz target:|Test unit written' "$log" | head -5
        echo "   full log: $log"
    fi
    rows+=("$(printf '%-18s %12s %8s %8s %8s %8s  %s' "$t" "${execs:--}" "${rate:--}" "$edges" "$features" \
        "$units" "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")
done
printf '%-18s %12s %8s %8s %8s %8s  %s\n' target execs exec/s cov ft corpus result
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]} (inputs under $build/artifacts/)"
    exit 1
fi
