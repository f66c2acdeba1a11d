"""Checks a tokenizer folder that tune wrote (tune merge from a GGUF base writes
tokenizer.json + tokenizer_config.json built from the GGUF metadata) against
the model's original Hugging Face tokenizer, through Transformers' AutoTokenizer.

    pip install transformers==5.23.0 tokenizers==0.23.3 jinja2
    python tools/reference/check_tokenizer_folder.py WRITTEN_DIR ORIGINAL_DIR

Compares, on every line of tests/data/tokenizer/corpus.jsonl: the ids with and
without special tokens and the decoded text (with and without special tokens);
then the chat template rendering and ids of a few conversations, and the
bos/eos/pad/unk tokens. Exits 1 on the first difference.
"""
import json
import os
import sys

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONVERSATIONS = [
    [{"role": "user", "content": "VLOOKUP으로 사번에 맞는 이름을 찾고 싶어요."}],
    [
        {"role": "system", "content": "당신은 엑셀 전문가입니다."},
        {"role": "user", "content": "=SUM(A1:A10) 합계는?"},
        {"role": "assistant", "content": "A1부터 A10까지 더합니다."},
        {"role": "user", "content": "평균은요?"},
    ],
]


def main():
    written, original = sys.argv[1], sys.argv[2]
    a = AutoTokenizer.from_pretrained(written)
    b = AutoTokenizer.from_pretrained(original)
    texts = [json.loads(line) for line in open(os.path.join(ROOT, "tests/data/tokenizer/corpus.jsonl"), encoding="utf-8")]
    for i, t in enumerate(texts):
        for special in (True, False):
            x, y = a.encode(t, add_special_tokens=special), b.encode(t, add_special_tokens=special)
            if x != y:
                sys.exit(f"corpus line {i + 1} (add_special_tokens={special}): ids differ\n{x}\n{y}")
            for skip in (True, False):
                if a.decode(x, skip_special_tokens=skip) != b.decode(y, skip_special_tokens=skip):
                    sys.exit(f"corpus line {i + 1}: decoded text differs (skip_special_tokens={skip})")
    for conv in CONVERSATIONS:
        for gen in (True, False):
            x = a.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            y = b.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            if x != y:
                sys.exit(f"chat template renders differently:\n{x!r}\n{y!r}")
            if a.encode(x, add_special_tokens=False) != b.encode(y, add_special_tokens=False):
                sys.exit("chat rendering ids differ")
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(a, role) != getattr(b, role):
            sys.exit(f"{role}: {getattr(a, role)!r} against {getattr(b, role)!r}")
    print(f"OK: {written} tokenizes {len(texts)} corpus lines and {len(CONVERSATIONS)} conversations "
          f"as {original} does ({type(a).__name__}; specials {a.bos_token} {a.eos_token} {a.pad_token} {a.unk_token})")


if __name__ == "__main__":
    main()
