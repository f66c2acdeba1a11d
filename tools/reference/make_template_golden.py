#!/usr/bin/env python3
"""Golden renderings of the built-in chat templates, for tests/test_template.c.

Needs: transformers (>= 4.43), jinja2, gguf (pip install transformers jinja2 gguf).

Each built-in template's real Jinja source (as published in the model's
tokenizer_config.json, or for vicuna_v1.1 / alpaca / chatml the common public
community template) is rendered with Transformers' own renderer
(transformers.utils.chat_template_utils.render_jinja_template, the code behind
apply_chat_template) for a set of test conversations. When a SmolLM2 GGUF is
given, the SmolLM2 template read from its tokenizer.chat_template is rendered
and tokenized with apply_chat_template(tokenize=True), and those ids are
written too.

Usage: python tools/reference/make_template_golden.py [SmolLM2.gguf] \
           > tests/data/data/templates_golden.json
       python tools/reference/make_template_golden.py --ids [TOKENIZER_DIR] \
           > tests/data/data/template_ids_golden.json

--ids writes token ids from apply_chat_template(tokenize=True) for every
template and conversation, with the test tokenizers in TOKENIZER_DIR
(default tests/data/tokenizer: llama3/ for the Llama 3 templates, smollm2/
for the others; each template is rendered with that tokenizer's own BOS/EOS
texts), and the ids of alpaca-format records tokenized the way Axolotl does
(prompt with special tokens, response without, then EOS).
"""
import json
import os
import sys

from transformers.utils.chat_template_utils import render_jinja_template

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
          "<|end_header_id|>\n\n' }}{% endif %}")

_L31_HEAD = (
    "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n")
_L31_DATE = "{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n"
_L32_DATE = ("{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n"
             "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n"
             "        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n")
_L31_SYS = (
    "{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n")
_L31_SYSBLOCK = (
    "{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') "
    "| join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n")
_L32_SYSBLOCK = (
    "{#- System message #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n")
_L31_DATELINES = (
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no first user message!\") }}\n"
    "{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n")
_L31_TOOLCALL = (
    "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n"
    "            {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
    "                {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor %}\n"
    "            {{- \")\" }}\n        {%- else  %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- '\"parameters\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n            {{- \"}\" }}\n        {%- endif %}\n"
    "        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n"
    "            {{- \"<|eom_id|>\" }}\n        {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n")
_L32_TOOLCALL = (
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n        {{- \"}\" }}\n        {{- \"<|eot_id|>\" }}\n")
_L31_TAIL = (
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n"
    "        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n")
LLAMA31 = _L31_HEAD + _L31_DATE + _L31_SYS + _L31_SYSBLOCK + _L31_DATELINES + _L31_TOOLCALL + _L31_TAIL
LLAMA32 = _L31_HEAD + _L32_DATE + _L31_SYS + _L32_SYSBLOCK + _L31_DATELINES + _L32_TOOLCALL + _L31_TAIL

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")

ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")

VICUNA = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = 'A chat between "
          "a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite "
          "answers to the user\\'s questions.' %}{% endif %}{{ system_message + ' ' }}{% for message in loop_messages %}"
          "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}{% elif message['role'] == "
          "'assistant' %}{{ 'ASSISTANT: ' + message['content'] + '</s>' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

CHATML = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
          "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
          "+ '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
           "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

ALPACA = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' and loop.first %}"
          "{{ message['content'] }}{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] }}"
          "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token }}{% endif %}"
          "{% if not loop.last %}{{ '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
          "{{ '\n\n### Response:\n' }}{% endif %}\n")

# name -> (source, bos_token, eos_token)
TEMPLATES = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_1": (LLAMA31, "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_2": (LLAMA32, "<|begin_of_text|>", "<|eot_id|>"),
    "llama2": (LLAMA2, "<s>", "</s>"),
    "chatml": (CHATML, "<|im_start|>", "<|im_end|>"),
    "smollm2": (SMOLLM2, "<|im_start|>", "<|im_end|>"),
    "vicuna_v1.1": (VICUNA, "<s>", "</s>"),
    "zephyr": (ZEPHYR, "<s>", "</s>"),
    "alpaca": (ALPACA, "<s>", "</s>"),
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}],
    [{"role": "system", "content": "You are an Excel expert."},
     {"role": "user", "content": "How do I sum A1:A10?"},
     {"role": "assistant", "content": "Use =SUM(A1:A10)."},
     {"role": "user", "content": "And the average?"},
     {"role": "assistant", "content": "=AVERAGE(A1:A10)"}],
    [{"role": "user", "content": "  엑셀에서 VLOOKUP 은 무엇인가요?\n"},
     {"role": "assistant", "content": "\n값을 찾는 함수입니다 😀  "}],
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Q"},
     {"role": "assistant", "content": "A"}],
]
# Llama 3.2 would use today's date when none is given: always pass one.
DATES = ["26 Jul 2024", "01 Jan 2025"]


def render(source, bos, eos, messages, gen, date):
    kwargs = {"bos_token": bos, "eos_token": eos}
    if date is not None:
        kwargs["date_string"] = date
    out = render_jinja_template(conversations=[messages], chat_template=source, add_generation_prompt=gen, **kwargs)
    return out[0][0] if isinstance(out, tuple) else out[0]


ALPACA_RECORDS = [
    {"instruction": "Sum A1:A3.", "input": "", "output": "=SUM(A1:A3)"},
    {"instruction": "합계를 구하세요.", "input": "A1:A10 매출", "output": "=SUM(A1:A10)"},
]
ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                     "{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def ids_golden(tokdir):
    from transformers import AutoTokenizer
    toks = {name: AutoTokenizer.from_pretrained(os.path.join(tokdir, name)) for name in ("llama3", "smollm2")}
    out = {"template_ids": [], "alpaca_ids": []}
    for name, (source, _, _) in TEMPLATES.items():
        tname = "llama3" if name.startswith("llama3") else "smollm2"
        tok = toks[tname]
        for ci, conv in enumerate(CONVERSATIONS):
            kwargs = {"date_string": "26 Jul 2024"} if name.startswith("llama3_") else {}
            text = tok.apply_chat_template(conv, tokenize=False, chat_template=source, **kwargs)
            ids = tok.apply_chat_template(conv, tokenize=True, chat_template=source, **kwargs)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            out["template_ids"].append({"template": name, "tokenizer": tname, "conversation": ci,
                                        "bos": tok.bos_token, "eos": tok.eos_token, "text": text,
                                        "ids": list(ids)})
    for tname, tok in toks.items():
        for rec in ALPACA_RECORDS:
            prompt = (ALPACA_WITH_INPUT if rec["input"] else ALPACA_NO_INPUT).format(**rec)
            p = tok(prompt)["input_ids"]
            r = tok(rec["output"], add_special_tokens=False)["input_ids"]
            out["alpaca_ids"].append({"tokenizer": tname, "record": rec, "prompt_len": len(p),
                                      "ids": p + r + [tok.eos_token_id]})
    out["conversations"] = CONVERSATIONS
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ids":
        golden = ids_golden(sys.argv[2] if len(sys.argv) > 2 else "tests/data/tokenizer")
        json.dump(golden, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return
    golden = {"templates": {}, "token_ids": []}
    for name, (source, bos, eos) in TEMPLATES.items():
        cases = []
        for ci, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                for date in (DATES if name.startswith("llama3_") else [None]):
                    cases.append({"conversation": ci, "add_generation_prompt": gen, "date": date,
                                  "text": render(source, bos, eos, conv, gen, date)})
        golden["templates"][name] = {"source": source, "bos": bos, "eos": eos, "cases": cases}
    golden["conversations"] = CONVERSATIONS
    if len(sys.argv) > 1:
        from transformers import AutoTokenizer
        import gguf
        path = sys.argv[1]
        reader = gguf.GGUFReader(path)
        field = reader.fields["tokenizer.chat_template"]
        model_template = bytes(field.parts[field.data[0]]).decode()
        assert model_template == SMOLLM2, "the SmolLM2 GGUF carries a different template"
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                            gguf_file=os.path.basename(path))
        for ci, conv in enumerate(CONVERSATIONS):
            ids = tok.apply_chat_template(conv, tokenize=True, chat_template=SMOLLM2)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            golden["token_ids"].append({"template": "smollm2", "model": "SmolLM2-135M-Instruct",
                                        "conversation": ci, "ids": list(ids)})
    json.dump(golden, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
