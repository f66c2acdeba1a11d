#!/usr/bin/env bash
# Training on a quantised base, end to end on the tiny model (hidden 64,
# intermediate 160): load_in_8bit (Q8_0 linear weights) and QLoRA (NF4
# where the rows are whole 64-blocks; down_proj's 160 stay fp32), also with
# bnb_4bit_use_double_quant (NF4_DQ: 8-bit absmax values). The plan
# shows the smaller weights, the losses stay near the fp32 run's, reruns
# are byte-identical, the adapter is PEFT's plain LoRA format, and the
# adapter generates on the base without merging. Needs $TUNE.
set -u
source "$(dirname "$0")/lib.bash"

sum_records 40 >data.jsonl
{
    tiny_config "$SRC/tests/data/tiny/gqa"
    cat <<YML
micro_batch_size: 2
max_steps: 12
learning_rate: 1.0e-3
lr_scheduler: constant
logging_steps: 1
save_steps: 100
seed: 3
YML
} >tiny.yml

# run NAME ARGS...: trains into runs/NAME.
run() {
    local name=$1
    shift
    expect 0 "$TUNE" train tiny.yml --output_dir "runs/$name" "$@"
}
# last_loss NAME: the loss of the run's last logged step.
last_loss() { grep '"loss"' "runs/$1/training_log.jsonl" | tail -1 | sed 's/.*"loss":\([0-9.eE+-]*\).*/\1/'; }
# within A B REL: |A − B| ≤ REL · |B|.
within() { awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; if (b < 0) b = -b; exit !(d <= r * b) }'; }

run fp32
run int8 --load_in_8bit true
run int8_again --load_in_8bit true
run nf4 --load_in_4bit true --adapter qlora
run nf4_dq --load_in_4bit true --adapter qlora --bnb_4bit_use_double_quant true

expect 0 "$TUNE" plan tiny.yml --load_in_8bit true
has out "load_in_8bit: full-precision linear weights in int8 (Q8_0)"
expect 0 "$TUNE" plan tiny.yml --load_in_4bit true --adapter qlora --json
has out "load_in_4bit: full-precision linear weights in NF4"
expect 2 "$TUNE" plan tiny.yml --load_in_4bit true
has err "load_in_4bit trains QLoRA: set adapter: qlora"
expect 0 "$TUNE" plan tiny.yml --load_in_4bit true --adapter qlora --bnb_4bit_use_double_quant true
has out "linear weights in NF4, absmax in 8 bits (double quant)"
expect 2 "$TUNE" plan tiny.yml --bnb_4bit_use_double_quant true
has err "bnb_4bit_use_double_quant quantises load_in_4bit's NF4 scales"

fp=$(last_loss fp32) i8=$(last_loss int8) n4=$(last_loss nf4) dq=$(last_loss nf4_dq)
echo "last loss: fp32 $fp, int8 $i8, NF4 $n4, NF4_DQ $dq"
within "$i8" "$fp" 0.03 || { echo "FAIL: int8 loss $i8 is not within 3% of fp32's $fp"; fails=$((fails + 1)); }
within "$n4" "$fp" 0.06 || { echo "FAIL: NF4 loss $n4 is not within 6% of fp32's $fp"; fails=$((fails + 1)); }
within "$dq" "$fp" 0.06 || { echo "FAIL: NF4_DQ loss $dq is not within 6% of fp32's $fp"; fails=$((fails + 1)); }
[ "$dq" != "$n4" ] || { echo "FAIL: NF4_DQ loss equals NF4's: no double quantisation happened"; fails=$((fails + 1)); }
[ "$i8" != "$fp" ] || { echo "FAIL: int8 loss equals fp32's: no quantisation happened"; fails=$((fails + 1)); }
cmp -s runs/int8/adapter_model.safetensors runs/int8_again/adapter_model.safetensors ||
    { echo "FAIL: load_in_8bit reruns differ"; fails=$((fails + 1)); }
has runs/nf4/adapter_config.json '"peft_type": "LORA"'
has runs/nf4_dq/adapter_config.json '"peft_type": "LORA"'

# The QLoRA adapter on its base, unmerged, and merged into fp32 (as PEFT merges).
expect 0 "$TUNE" generate "$SRC/tests/data/tiny/gqa" --adapter runs/nf4 --raw --prompt "=SUM(A1" --max_new_tokens 8
expect 0 "$TUNE" merge "$SRC/tests/data/tiny/gqa" runs/nf4 merged --dtype f32
[ -s merged/model.safetensors ] || { echo "FAIL: no merged model"; fails=$((fails + 1)); }
finish train_quantised
