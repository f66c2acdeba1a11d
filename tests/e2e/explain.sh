#!/usr/bin/env bash
# tune explain on the tiny model (its second step; the first with a plan of
# one): the text table (forward, backward and
# optimizer rows in that order, shapes, the step against its operations, the
# sgemm ceiling, the memory table) and --json (every operation with name,
# shape, FLOPs, bytes and seconds in pass order; the ops' seconds add up to
# the step's within 10%: both come from the same run, so the check is a ratio,
# not a timing; FLOPs that match the model's formulas; a memory table that
# adds up); gradient checkpointing shows its recomputation; nothing is written
# into output_dir but the data cache; bad arguments exit 2. Needs $TUNE.
set -u
source "$(dirname "$0")/lib.bash"

sum_records 40 > data.jsonl
{
    tiny_config "$SRC/tests/data/tiny/gqa"
    cat <<YML
lora_dropout: 0.1
sample_packing: true
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 5
learning_rate: 1.0e-3
output_dir: run
seed: 3
YML
} > tiny.yml

expect 0 "$TUNE" explain tiny.yml
cp out text.out
has text.out "tune explain: one optimizer step of tiny.yml (step 2; the first warms the caches)"
# has_re FILE REGEX: FILE has a line matching the extended regular expression.
has_re() { grep -Eq -- "$2" "$1" || { echo "FAIL: $1 lacks /$2/"; fails=$((fails + 1)); }; }
has_re text.out "^2 micro-batches of 2 × [0-9]+ tokens \([0-9]+ tokens\); loss [0-9.]+, grad norm [0-9.]+$"
has_re text.out "^forward +layers 0-1 q_proj weight_matmul +[0-9]+×64 · \(64×64\)ᵀ F32( …)? +4 "
# layer 0's q/k/v input gradient is not made: nothing below reads it
has_re text.out "^backward +layer 1 q_proj weight_matmul +[0-9]+×64 · 64×64 F32( …)? +2 "
grep -Eq "^backward +layers? 0(-1)? q_proj weight_matmul" text.out && { echo "FAIL: layer 0's q_proj input gradient made"; fails=$((fails + 1)); }
has text.out "attention_forward"
has text.out "attention_backward"
has text.out "dropout_apply"
has text.out "of the sgemm ceiling"
has text.out "workspace"
has text.out "    resid "
has text.out "  total"
# Rows in pass order: the layers' forward, then their backward, the optimizer last.
line() { grep -nE "$1" text.out | "$2" -1 | cut -d: -f1; }
f=$(line "^forward +layers" tail) b=$(line "^backward +layers" head) o=$(line "^optimizer " head)
if ! [ -n "$f" ] || ! [ -n "$b" ] || ! [ -n "$o" ] || ! [ "$f" -lt "$b" ] || ! [ "$b" -lt "$o" ]; then
    echo "FAIL: pass rows out of order (last forward $f, first backward $b, optimizer $o)"
    fails=$((fails + 1))
fi
share=$(sed -n 's/.*its operations take .* (\([0-9.]*\)% of it).*/\1/p' text.out)
awk -v s="$share" 'BEGIN { exit !(s != "" && s >= 90 && s <= 100.05) }' ||
    { echo "FAIL: the operations take $share% of the step"; fails=$((fails + 1)); }
# Nothing but the data cache in output_dir.
left=$(ls run 2>/dev/null | grep -v '^prepared$')
[ -z "$left" ] || { echo "FAIL: tune explain wrote into output_dir: $left"; fails=$((fails + 1)); }

# check.py FILE CHECKPOINTING: the --json output.
cat > check.py <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
ckpt = sys.argv[2] == "1"
bad = []
def check(ok, what):
    if not ok: bad.append(what)
ops = j["ops"]
check(len(ops) > 100, "few ops: %d" % len(ops))
check(j["step"] == 2, "profiled step %s, not the second" % j.get("step"))
for o in ops:
    check(set(o) >= {"pass", "layer", "name", "shape", "flops", "bytes", "seconds"}, "op fields: %s" % o)
# pass order: per micro-batch the layers' forward, then their backward (with
# checkpointing, each layer's recomputation inside it); the optimizer last
seq = []
for o in ops:
    p = "backward" if o["pass"] == "recompute" else o["pass"]
    if o["layer"] >= 0 and (not seq or seq[-1] != p): seq.append(p)
check(seq == ["forward", "backward"] * j["micro_batches"], "pass order %s" % seq)
check([o["name"] for o in ops[-2:]] == ["clip_grad_norm", "adamw_update"], "optimizer last: %s" % ops[-2:])
check(all(o["pass"] == "optimizer" for o in ops[-2:]), "optimizer pass")
# the seconds of the operations add up to the step's (a ratio of one run)
s = sum(o["seconds"] for o in ops)
check(0.9 * j["step_seconds"] <= s <= j["step_seconds"], "ops %.6f s vs step %.6f s" % (s, j["step_seconds"]))
# FLOPs: the frozen x·Wᵀ of every layer over every token, as 2·N·params
per_layer = 4096 + 2048 + 2048 + 4096 + 3 * 10240
fw = sum(o["flops"] for o in ops if o["pass"] == "forward" and o["op"] == "weight_matmul" and o["layer"] >= 0)
check(fw == 2 * j["tokens"] * 2 * per_layer, "forward weight_matmul FLOPs %g" % fw)
lora = 2 * 4 * (64 + 64 + 2 * (64 + 32) + 64 + 64 + 3 * (64 + 160))
check(j["model_flops_per_token"] == 4 * (2 * per_layer + 384 * 64) + 6 * lora + 6 * 2 * j["sequence_len"] * 64,
      "model FLOPs per token %g" % j["model_flops_per_token"])
check(j["sgemm"]["gflops"] > 0 and j["achieved_fraction"] > 0, "sgemm and achieved fraction")
m = j["memory"]
check(sum(m["workspace"].values()) == m["workspace_total"], "workspace total")
state = sum(v for k, v in m.items() if k not in ("workspace", "workspace_total", "total"))
check(m["total"] == state + m["workspace_total"], "memory total")
check(m["lora_params"] == 4 * lora and m["lora_grads"] == m["lora_params"], "LoRA state %s" % m["lora_params"])
check(m["workspace"]["resid"] > 0 and m["workspace"]["dropout_masks"] > 0, "workspace buffers")
check(j["gradient_checkpointing"] == ckpt, "gradient_checkpointing")
check(any(o["pass"] == "recompute" for o in ops) == ckpt, "recomputation")
if bad:
    print("FAIL: tune explain --json: " + "; ".join(bad[:5]))
    sys.exit(1)
PY
expect 0 "$TUNE" explain tiny.yml --json
python3 check.py out 0 || fails=$((fails + 1))

# Gradient checkpointing: each layer's forward again inside the backward.
expect 0 "$TUNE" explain tiny.yml --gradient_checkpointing true --json
python3 check.py out 1 || fails=$((fails + 1))
expect 0 "$TUNE" explain tiny.yml --gradient_checkpointing true --all
has out "gradient checkpointing on"
has out "recompute  layer 1 attention attention_forward"

# A plan of one step: that step, cold, and said so.
expect 0 "$TUNE" explain tiny.yml --max_steps 1
has out "tune explain: one optimizer step of tiny.yml (step 1, the only one: cold caches and first page touches)"

# Bad input: exit 2.
expect 2 "$TUNE" explain
expect 2 "$TUNE" explain missing.yml
expect 2 "$TUNE" explain tiny.yml --no_such_key 1
expect 0 "$TUNE" explain --help
has out "usage: tune explain CONFIG.yml"

finish explain
