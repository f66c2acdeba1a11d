#!/usr/bin/env bash
# Models' own Jinja chat templates: chat_template: jinja (text or file),
# tokenizer_default on a model whose template has no built-in renderer,
# a template's raise_exception stopping preprocess (exit 2, record named,
# message quoted), tune template show/render, and generation with a
# --chat_template FILE.jinja.
# Needs $TUNE (the binary). Runs in a scratch folder.
set -u
source "$(dirname "$0")/lib.bash"

D=$SRC/tests/data/data
GEMMA=$SRC/tests/data/jinja/templates/google-gemma-2-2b-it.jinja
cp "$GEMMA" gemma.jinja
# ShareGPT conversations without a system message (Gemma refuses those).
cat > chats.json <<'JSON'
[
  {"conversations": [{"from": "human", "value": " A1 합계? "}, {"from": "gpt", "value": "=SUM(A:A)"}]},
  {"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                     {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}
]
JSON
config() { # config DATA TEMPLATE-KEYS...
    local data=$1
    shift
    cat <<YML
base_model: $SRC/tests/data/tiny/gqa
datasets:
  - path: $data
    type: sharegpt
sequence_len: 256
learning_rate: 1e-4
lora_target_linear: true
output_dir: run
YML
    printf '%s\n' "$@"
}

# chat_template: jinja with a file: the Gemma turns, content trimmed, replies trained.
config chats.json "chat_template: jinja" "chat_template_jinja: gemma.jinja" > file.yml
expect 0 "$TUNE" preprocess file.yml --debug 2
has out "chats.json: 2 records, 0 skipped, 2 examples"
has run/processed_conversations.json '<start_of_turn>user\nA1 합계?<end_of_turn>\n<start_of_turn>model\n=SUM(A:A)<end_of_turn>\n'
has out "[=][SUM][(][A][:][A][)]<end_of_turn>"  # the reply's tokens carry loss; the headers do not
lacks out "[<start_of_turn>]"

# The same template given as text in the config renders the same examples.
{ config chats.json "chat_template: jinja" "chat_template_jinja: |"; sed 's/^/  /' gemma.jinja; echo; } > text.yml
expect 0 "$TUNE" preprocess text.yml --output_dir run_text
cmp -s run/processed_conversations.json run_text/processed_conversations.json ||
    { echo "FAIL: template text and template file give different examples"; fails=$((fails + 1)); }

# The template refuses a system message: exit 2, the data file and record
# named, the template's message quoted.
config "$D/sharegpt.json" "chat_template: jinja" "chat_template_jinja: gemma.jinja" > sys.yml
expect 2 "$TUNE" preprocess sys.yml
has err "sharegpt.json:2: the chat template refused the conversation"
has err '"System role not supported"'

# Mistakes in the keys are named, not ignored.
config chats.json "chat_template: jinja" > missing.yml
expect 2 "$TUNE" preprocess missing.yml
has err "chat_template_jinja"
config chats.json "chat_template_jinja: gemma.jinja" > unused.yml
expect 2 "$TUNE" preprocess unused.yml
has err "chat_template_jinja is set but no chat_template is jinja"
config chats.json "chat_template: jinja" "chat_template_jinja: nothere.jinja" > nofile.yml
expect 2 "$TUNE" preprocess nofile.yml
has err "'nothere.jinja' does not exist"
printf '{%% for m in messages %%}{{ m.content | nosuchfilter }}{%% endfor %%}' > bad.jinja
config chats.json "chat_template: jinja" "chat_template_jinja: bad.jinja" > bad.yml
expect 2 "$TUNE" preprocess bad.yml
has err "bad.jinja:1:"
has err "nosuchfilter"

# tokenizer_default on a model whose own template tune has no renderer for:
# the model's template runs as Jinja.
cp -r "$SRC/tests/data/tiny/gqa" gemma_model
python3 - gemma_model/tokenizer_config.json gemma.jinja <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["chat_template"] = open(sys.argv[2]).read()
json.dump(cfg, open(sys.argv[1], "w"))
PY
sed "s|$SRC/tests/data/tiny/gqa|$work/gemma_model|" file.yml | grep -v chat_template > own.yml
expect 0 "$TUNE" preprocess own.yml --output_dir run_own
cmp -s run/processed_conversations.json run_own/processed_conversations.json ||
    { echo "FAIL: the model's own template and the same file give different examples"; fails=$((fails + 1)); }
expect 0 "$TUNE" template show gemma_model
has out "run as Jinja"
expect 0 "$TUNE" template show "$SRC/tests/data/tokenizer/smollm2"
has out "built-in 'smollm2'"

# tune template render: exactly what Transformers renders (text from apply_chat_template).
printf '[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": " Hi "}, {"role": "user", "content": "표"}]' > conv.json
expect 0 "$TUNE" template render gemma.jinja --messages conv.json --add-generation-prompt
printf '<s><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi<end_of_turn>\n<start_of_turn>user\n표<end_of_turn>\n<start_of_turn>model\n' > want
cmp -s out want || { echo "FAIL: template render"; diff out want | head -5; fails=$((fails + 1)); }
expect 0 "$TUNE" template render gemma_model --messages conv.json --ids
has out "<|im_start|><start_of_turn>user"
has out " ids ----"
printf '[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]' > sys.json
expect 2 "$TUNE" template render gemma.jinja --messages sys.json
has err '"System role not supported"'
expect 2 "$TUNE" template render gemma.jinja --messages nothere.json
expect 2 "$TUNE" template render gemma.jinja
has err "--messages"

# Generation renders prompts with the same engine.
expect 0 "$TUNE" generate gemma_model --prompt "Hi" --max_new_tokens 2
expect 0 "$TUNE" generate "$SRC/tests/data/tiny/gqa" --chat_template gemma.jinja --prompt "Hi" --max_new_tokens 2
expect 2 "$TUNE" generate "$SRC/tests/data/tiny/gqa" --chat_template bad.jinja --prompt "Hi" --max_new_tokens 2
has err "nosuchfilter"

finish chat_jinja
