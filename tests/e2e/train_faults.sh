#!/usr/bin/env bash
# Faults during training on the tiny model, each ending with the adapter
# bytes of an uninterrupted run: SIGTERM and SIGINT (checkpoint, resume
# command, exit 143/130), a second signal (ends at once), SIGKILL at named
# points (between steps, mid-checkpoint, mid data-cache write, mid final
# adapter), a full disk, an output_dir that cannot be made, a second run on
# the same output_dir, and OPENBLAS_CORETYPE (NaN steps: test_train). The points come
# from tune's test hook TUNE_TEST_FAULT=kill@POINT / stop@POINT (a process
# stopped there waits for the test's signals), so nothing depends on timing.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

sum_records 40 > data.jsonl
{
    tiny_config "$SRC/tests/data/tiny/gqa"
    cat <<YML
lora_dropout: 0.1
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 30
learning_rate: 1.0e-3
logging_steps: 1
save_steps: 10
seed: 7
YML
} > tiny.yml

# train OUT [ARGS...]: a quiet run into runs/OUT; its status is the function's.
train() {
    local out=$1
    shift
    "$TUNE" train tiny.yml --output_dir "runs/$out" "$@" >out.txt 2>err.txt
}
# same OUT WHAT: runs/OUT's final adapter has the uninterrupted run's bytes.
same() {
    cmp -s runs/ref/adapter_model.safetensors "runs/$1/adapter_model.safetensors" ||
        fail "$2: the adapter differs from the uninterrupted run's"
}
# resume OUT WHAT: auto-resume runs/OUT and compare.
resume() {
    train "$1" --auto_resume_from_checkpoints true || {
        fail "$2: resuming exited $?"
        sed 's/^/  | /' err.txt | tail -3
    }
    same "$1" "$2"
}
# complete OUT: every checkpoint-N of runs/OUT is whole: its state says step
# N, and its weights and moments are the uninterrupted run's when that run
# saved step N too (its log differs only in the measured tokens/s).
complete() {
    local c n
    for c in runs/"$1"/checkpoint-*; do
        case $c in *.tmp | *.old) continue ;; esac
        [ -d "$c" ] || continue
        n=${c##*-}
        grep -Eq "\"global_step\":[[:space:]]*$n," "$c/trainer_state.json" 2>/dev/null ||
            fail "$c/trainer_state.json is missing or not step $n's"
        for f in adapter_model.safetensors adapter_config.json optimizer.safetensors; do
            if [ -d "runs/ref/checkpoint-$n" ]; then
                cmp -s "$c/$f" "runs/ref/checkpoint-$n/$f" || fail "$c/$f is not the uninterrupted run's"
            else
                [ -s "$c/$f" ] || fail "$c/$f is missing"
            fi
        done
    done
}
# start OUT FAULT [ARGS...]: a run in the background with TUNE_TEST_FAULT=FAULT; $pid.
# SIGINT as a foreground job has it (a shell's background job inherits it
# ignored, and tune keeps an inherited ignore).
start() {
    local out=$1 fault=$2
    shift 2
    TUNE_TEST_FAULT=$fault env --default-signal=INT "$TUNE" train tiny.yml --output_dir "runs/$out" "$@" \
        >out.txt 2>err.txt &
    pid=$!
}
# stopped: waits until $pid stopped itself at its stop@ point (1 if it ended instead).
stopped() {
    local state
    for _ in $(seq 1 2000); do
        state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
        case $state in T* | t*) return 0 ;; Z*) return 1 ;; esac
        sleep 0.01
    done
    return 1
}
# finished CODE WHAT: waits for $pid and checks its status.
finished() { # CODE[|CODE...] WHAT
    wait "$pid" 2>/dev/null
    local got=$?
    case "|$1|" in *"|$got|"*) true ;; *) false ;; esac || {
        fail "$2: exited $got, expected $1"
        sed 's/^/  | /' err.txt | tail -3
    }
}

train ref || fail "the uninterrupted run exited $?"

# SIGTERM after step 7: the step ends, checkpoint-7 is written, the printed
# command resumes to the same bytes, exit 143.
start term "stop@after step 7"
stopped || fail "the SIGTERM run did not stop at step 7"
kill -TERM "$pid"
kill -CONT "$pid"
finished 143 "SIGTERM"
has err.txt "tune: SIGTERM received: training stopped on request after step 7 of 30; the checkpoint is"
[ -e runs/term/checkpoint-7/trainer_state.json ] || fail "SIGTERM wrote no checkpoint-7"
[ -e runs/term/adapter_model.safetensors ] && fail "SIGTERM wrote a final adapter"
cmd=$(sed -n 's/^tune: resume with: //p' err.txt)
case $cmd in
*" train tiny.yml --output_dir runs/term --resume_from_checkpoint "*/runs/term/checkpoint-7) ;;
*) fail "resume command: '$cmd'" ;;
esac
eval "$cmd" >out.txt 2>err.txt || fail "the printed resume command exited $?"
same term "SIGTERM + the printed command"
complete term

# SIGINT (Ctrl-C) likewise, exit 130.
start int "stop@after step 13"
stopped || fail "the SIGINT run did not stop at step 13"
kill -INT "$pid"
kill -CONT "$pid"
finished 130 "SIGINT"
has err.txt "tune: SIGINT received"
[ -d runs/int/checkpoint-13 ] || fail "SIGINT wrote no checkpoint-13"
resume int "SIGINT"

# A second signal ends tune at once: no checkpoint of step 13, no resume
# command; the run resumes from checkpoint-10. Both wait while it is
# stopped. Which one counts as second is not fixed: while SIGINT is pending
# on the main thread the kernel hands SIGTERM to another of tune's threads,
# and on SIGCONT both handlers run at once; tune then exits by whichever of
# the two came second, 143 or 130.
start twice "stop@after step 13"
stopped || fail "the run for two signals did not stop at step 13"
kill -INT "$pid"
kill -TERM "$pid"
kill -CONT "$pid"
finished "143|130" "a second signal"
lacks err.txt "resume with"
[ -e runs/twice/checkpoint-13 ] && fail "a second signal still wrote checkpoint-13"
complete twice
resume twice "a second signal"

# SIGKILL at named points: between steps, in the middle of a checkpoint's
# files (built in checkpoint-20.tmp), of the data cache, of the final
# adapter. Each leaves whole checkpoints only, and resumes to the same bytes.
i=0
for point in "after step 13" "checkpoint-20.tmp/optimizer.safetensors" "checkpoint-20.tmp/trainer_state.json" \
    ".tunedata" "k4/adapter_model.safetensors"; do
    start "k$i" "kill@$point"
    finished 137 "SIGKILL at '$point'"
    [ -e "runs/k$i/adapter_model.safetensors" ] && fail "SIGKILL at '$point': a final adapter exists"
    complete "k$i"
    case $point in
    checkpoint-20*)
        [ -d "runs/k$i/checkpoint-20.tmp" ] || fail "SIGKILL at '$point' left no partial checkpoint-20.tmp"
        [ -e "runs/k$i/checkpoint-20" ] && fail "SIGKILL at '$point': checkpoint-20 exists"
        ;;
    .tunedata)
        ls runs/k$i/prepared/*.tunedata >/dev/null 2>&1 && fail "SIGKILL mid-cache: a cache file exists"
        ls runs/k$i/prepared/*.tunedata.tmp >/dev/null 2>&1 || fail "SIGKILL mid-cache: no partial cache"
        ;;
    esac
    resume "k$i" "SIGKILL at '$point'"
    ls runs/k$i/checkpoint-*.tmp runs/k$i/prepared/*.tmp >/dev/null 2>&1 && fail "SIGKILL at '$point': .tmp left"
    i=$((i + 1))
done
head -c 8 runs/k3/prepared/*.tunedata | grep -q TUNEDAT1 || fail "the rebuilt cache is not a cache"

# A full disk while writing checkpoint-20: the error names the file and the
# system's reason, checkpoint-10 stays whole, and the run resumes elsewhere.
# A small tmpfs where it can be mounted; else a file-size limit (EFBIG).
start full "kill@after step 13"
finished 137 "the run to fill a disk with"
mkdir -p mnt
kb=$(du -sk runs/full | cut -f1)
if mount -t tmpfs -o size=$((kb + 64))k tmpfs mnt 2>/dev/null; then
    mounted=1
    trap 'umount "$work/mnt"; rm -rf "$work"' EXIT
    reason="No space left on device"
    cp -r runs/full mnt/full
    "$TUNE" train tiny.yml --output_dir mnt/full --auto_resume_from_checkpoints true >out.txt 2>err.txt
    status=$?
else
    mounted=0
    reason="File too large"
    cp -r runs/full mnt/full
    (
        ulimit -f 60
        exec "$TUNE" train tiny.yml --output_dir mnt/full --auto_resume_from_checkpoints true
    ) >out.txt 2>err.txt
    status=$?
fi
[ "$status" = 1 ] || fail "a full disk: exited $status, expected 1"
has err.txt "cannot write the checkpoint of step 20"
has err.txt "checkpoint-20.tmp/optimizer.safetensors.tmp: write failed: $reason"
has err.txt "the last good checkpoint is $PWD/mnt/full/checkpoint-10"
[ -e mnt/full/checkpoint-20 ] || [ -e mnt/full/checkpoint-20.tmp ] && fail "a full disk left checkpoint-20"
rm -rf runs/full && cp -r mnt/full runs/full
[ "$mounted" = 1 ] && umount mnt && trap 'rm -rf "$work"' EXIT
complete full
resume full "a full disk"

# An output_dir that cannot be made: named with the reason, before any data work.
touch afile
train nodir --output_dir afile/out
[ $? = 1 ] || fail "an output_dir under a file: exited $?, expected 1"
has err.txt "afile/out: cannot create directory: Not a directory"

# One writer per output_dir: a second run is refused naming the first's pid;
# once the first is killed, its lock is taken over.
start lock "stop@after step 3"
stopped || fail "the locking run did not stop"
"$TUNE" train tiny.yml --output_dir runs/lock >out2.txt 2>err2.txt
[ $? = 2 ] || fail "a second run on the same output_dir exited $?, expected 2"
has err2.txt "output_dir is in use by another tune run (pid $pid holds $PWD/runs/lock/tune.lock)"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
resume lock "a killed run's lock"

# OPENBLAS_CORETYPE: the user's setting is kept (no re-execution) and the
# kernels in use are named with who chose them.
if grep -qw avx2 /proc/cpuinfo; then
    OPENBLAS_CORETYPE=Haswell "$TUNE" --version >out.txt
    has out.txt "Haswell kernels (OPENBLAS_CORETYPE from the environment)"
fi
grep -q "^tune: cpu: OpenBLAS .* kernels (" err.txt || fail "the training log does not name the BLAS kernels"
if grep -qw avx512f /proc/cpuinfo; then
    env -u OPENBLAS_CORETYPE "$TUNE" --version >out.txt
    grep -Eq "(SkylakeX|Cooperlake|SapphireRapids) kernels \((OpenBLAS's own choice|OPENBLAS_CORETYPE=SkylakeX, set by tune)" out.txt ||
        fail "no AVX-512 kernels on an AVX-512 CPU: $(sed -n 2p out.txt)"
fi

finish train_faults
