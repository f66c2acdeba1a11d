#!/usr/bin/env bash
# Data-parallel training under mpirun on the tiny model: N ranks write the
# adapter of one process with gradient_accumulation_steps x N, byte for byte
# (2 and 3 ranks); a rank killed mid-run ends the job within seconds with
# its checkpoints intact; resume from 1 rank to 2 and from 2 to 1; ranks
# with different configs or data are refused; tune plan shows the ranks.
# A build without MPI refuses to run as several ranks, then this says
# "skipped: built without MPI". Needs $TUNE (the binary).
set -u
source "$(dirname "$0")/lib.bash"
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

sum_records 40 > data.jsonl
# One thread per rank: the 1-process runs compare with the same kernels' splits.
cat > tiny.yml <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: data.jsonl
    type: completion
val_set_size: 8
adapter: lora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.1
lora_target_linear: true
sequence_len: 64
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 12
learning_rate: 1.0e-3
logging_steps: 2
eval_steps: 4
save_steps: 4
threads: 1
output_dir: runs/unused
seed: 7
YML

if ! "$TUNE" --version | grep -q '^mpi: Open MPI'; then
    # Launched as rank 0 of 2 (the variables mpirun sets): a clear refusal, exit 2.
    OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 expect 2 "$TUNE" train tiny.yml --output_dir runs/x
    has err "built without MPI"
    [ -e runs/x ] && fail "the refused run wrote into its output_dir"
    [ "$fails" = 0 ] && echo "skipped: built without MPI (train_parallel: the refusal checked)"
    exit $((fails > 0))
fi
if ! command -v mpirun >/dev/null; then
    echo "skipped: mpirun is not installed (apt-get install openmpi-bin)"
    exit 0
fi

# mpirun_tune N ARGS...: tune train tiny.yml ARGS on N ranks; a per-rank
# wrapper applies RANK_FAULT (TUNE_TEST_FAULT on rank FAULT_RANK only) and
# RANK_ARGS (extra arguments of rank 1, run from RANK_DIR when set).
cat > rank.sh <<'SH'
#!/usr/bin/env bash
rank=$OMPI_COMM_WORLD_RANK
[ -n "${RANK_FAULT:-}" ] && [ "$rank" = "${FAULT_RANK:-1}" ] && export TUNE_TEST_FAULT=$RANK_FAULT
if [ "$rank" = 1 ]; then
    [ -n "${RANK_DIR:-}" ] && cd "$RANK_DIR"
    exec "$@" ${RANK_ARGS:-}
fi
exec "$@"
SH
chmod +x rank.sh
mpirun_tune() {
    local n=$1
    shift
    timeout 120 mpirun --allow-run-as-root --oversubscribe -x RANK_FAULT -x FAULT_RANK -x RANK_ARGS -x RANK_DIR \
        -np "$n" ./rank.sh "$TUNE" train "$PWD/tiny.yml" "$@" >out 2>err
}
export RANK_FAULT="" FAULT_RANK=1 RANK_ARGS="" RANK_DIR=""
# same_run A B: the same adapter bytes and the same log (throughput aside).
same_run() {
    cmp -s "$1/adapter_model.safetensors" "$2/adapter_model.safetensors" || fail "$2's adapter differs from $1's"
    cmp -s <(grep -v tokens_per_second "$1/training_log.jsonl") <(grep -v tokens_per_second "$2/training_log.jsonl") ||
        fail "$2's training log differs from $1's"
}

# One process with the global batch: 2 x 4 and 2 x 6 micro-batches per step.
expect 0 "$TUNE" train tiny.yml --output_dir runs/one4 --gradient_accumulation_steps 4
expect 0 "$TUNE" train tiny.yml --output_dir runs/one6 --gradient_accumulation_steps 6

# 2 ranks x 2 and 3 ranks x 2 micro-batches: the same bytes (with 3, the
# last step of each epoch has 4 micro-batches: rank 2 computes none).
mpirun_tune 2 --output_dir runs/two || fail "2 ranks exited $?: $(grep error err | head -3)"
same_run runs/one4 runs/two
has err "2 ranks (MPI): each computes 2 of the 4 micro-batches"
[ "$(grep -c 'training for 12 steps' err)" = 1 ] || fail "progress not printed once (by rank 0)"
mpirun_tune 3 --output_dir runs/three || fail "3 ranks exited $?: $(grep error err | head -3)"
same_run runs/one6 runs/three

# tune plan: ranks, per-rank and global batch, steps.
expect 0 "$TUNE" plan tiny.yml --ranks 2
has out "2 sequences x 2 accumulation = 4 per rank, x 2 ranks = 8 sequences"
has out "per epoch 4; total 12"
timeout 60 mpirun --allow-run-as-root --oversubscribe -np 3 "$TUNE" plan tiny.yml >out 2>err ||
    fail "tune plan under mpirun exited $?"
[ "$(grep -c '^batch' out)" = 1 ] || fail "tune plan under mpirun printed $(grep -c '^batch' out) plans"
has out "x 3 ranks = 12 sequences"

# Rank 1 killed after step 5: the job ends within seconds, not hanging;
# checkpoint-4 is whole (one process's bytes); auto resume on 2 ranks.
t0=$(date +%s)
RANK_FAULT="kill@after step 5" mpirun_tune 2 --output_dir runs/kill
status=$?
[ "$status" != 0 ] || fail "a job whose rank 1 was killed exited 0"
[ "$status" != 124 ] || fail "a job whose rank 1 was killed hung"
[ $(($(date +%s) - t0)) -lt 60 ] || fail "a job whose rank 1 was killed took $(($(date +%s) - t0)) s to end"
grep -q "rank 1 .*exited on signal 9" err || fail "mpirun did not name the killed rank: $(tail -3 err)"
has err "rank 0: stop signal"
cmp -s runs/one4/checkpoint-4/adapter_model.safetensors runs/kill/checkpoint-4/adapter_model.safetensors ||
    fail "checkpoint-4 of the killed job is not whole"
ls -d runs/kill/checkpoint-*.tmp >/dev/null 2>&1 && fail "the killed job left a partial checkpoint"
mpirun_tune 2 --output_dir runs/kill --auto_resume_from_checkpoints true || fail "resume on 2 ranks exited $?"
same_run runs/one4 runs/kill

# One process killed after step 5, resumed on 2 ranks (2 x 2 = its 4 micro-batches).
TUNE_TEST_FAULT="kill@after step 5" "$TUNE" train tiny.yml --output_dir runs/up --gradient_accumulation_steps 4 \
    >/dev/null 2>&1 &
wait $! 2>/dev/null
[ -d runs/up/checkpoint-4 ] || fail "the 1-process run to resume wrote no checkpoint-4"
mpirun_tune 2 --output_dir runs/up --resume_from_checkpoint runs/up/checkpoint-4 ||
    fail "resuming a 1-process checkpoint on 2 ranks exited $?"
has err "resuming at step 4"
same_run runs/one4 runs/up

# 2 ranks, rank 0 killed after step 9; resumed by one process.
RANK_FAULT="kill@after step 9" FAULT_RANK=0 mpirun_tune 2 --output_dir runs/down
[ -d runs/down/checkpoint-8 ] || fail "the 2-rank run to resume wrote no checkpoint-8"
expect 0 "$TUNE" train tiny.yml --output_dir runs/down --gradient_accumulation_steps 4 --auto_resume_from_checkpoints true
same_run runs/one4 runs/down
# A global batch that differs from the checkpoint's is refused.
mpirun_tune 3 --output_dir runs/up --resume_from_checkpoint runs/up/checkpoint-4
[ $? = 2 ] || fail "resuming 4 micro-batches per step with 6 was not refused with exit 2"
has err "resuming needs the same data"

# Ranks with different configs, or different data under the same config, are refused.
RANK_ARGS="--learning_rate 2e-3" mpirun_tune 2 --output_dir runs/cfg
[ $? = 2 ] || fail "ranks with different configs: not exit 2"
has err "the ranks differ in the resolved config"
[ -e runs/cfg/adapter_model.safetensors ] && fail "ranks with different configs trained"
mkdir -p other && sum_records 41 > other/data.jsonl && cp tiny.yml other/
RANK_DIR=other mpirun_tune 2 --output_dir runs/data
[ $? = 2 ] || fail "ranks with different data: not exit 2"
has err "the ranks differ in the prepared data"

finish train_parallel
