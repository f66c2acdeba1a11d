#!/usr/bin/env python3
"""Golden renderings of real models' chat templates, for tune's Jinja engine
(tests/test_jinja.c reads tests/data/jinja/golden.json).

Needs: transformers (>= 4.50), jinja2 >= 3.1.6 (pip install transformers jinja2).

The templates live in tests/data/jinja/templates/*.jinja; tests/data/jinja/
templates.json names each one's model and where its text came from. Each is
rendered with Transformers' own renderer (render_jinja_template, the code
behind apply_chat_template) on every test conversation, with and without the
generation prompt. strftime_now is pinned to NOW so the goldens do not change
with the day they are made. A case whose template calls raise_exception
records the message ("error") instead of the text; a case that fails in
Python for any other reason (a template that needs inputs these conversations
lack, say) records the Python exception as "failure": tune must fail there too.

Usage:
  python tools/reference/make_jinja_golden.py > tests/data/jinja/golden.json
  python tools/reference/make_jinja_golden.py --import LLAMA_CPP_SOURCE
      (one-off: copies the templates llama.cpp's source tree carries, from
      models/templates/ and tests/test-chat-template.cpp, into
      tests/data/jinja/templates/ and lists them in templates.json)
"""
import datetime as dt
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "tests", "data", "jinja")
NOW = 1721952000  # 2024-07-26 00:00:00 UTC

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi! How can I help you today?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 2 + 2?"},
     {"role": "assistant", "content": "2 + 2 = 4."},
     {"role": "user", "content": "And times 3?"},
     {"role": "assistant", "content": "(2 + 2) × 3 = 12."}],
    [{"role": "system", "content": "당신은 엑셀 전문가입니다. 한국어로 답하세요."},
     {"role": "user", "content": "A열의 합계를 구하려면 어떻게 하나요?"},
     {"role": "assistant", "content": "=SUM(A:A) 를 입력하세요."},
     {"role": "user", "content": "조건이 있으면요? 예: B열이 \"완료\"인 행만"}],
    [{"role": "user", "content": "  Leading and trailing spaces  "},
     {"role": "assistant", "content": "\nA reply\nover lines\n"},
     {"role": "user", "content": "Quote ' and \" and \\ and {{ braces }}"},
     {"role": "assistant", "content": "OK: '\"\\ {% not a tag %}"}],
    [{"role": "user", "content": "VLOOKUP와 XLOOKUP의 차이는?"}],
    [{"role": "user", "content": "첫 질문"}, {"role": "user", "content": "두 번째 질문"}],
]
CONTEXT = ("Each case renders with the variables messages (the conversation), add_generation_prompt, "
           "bos_token and eos_token (the template's), tools = None and documents = None, as "
           "apply_chat_template passes them; strftime_now formats the time 'now' (UTC).")


def render(source, bos, eos, messages, gen):
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, indices = render_jinja_template(
        conversations=[messages], chat_template=source, add_generation_prompt=gen,
        return_assistant_tokens_mask=True, bos_token=bos, eos_token=eos)
    text = rendered[0]
    spans = []
    for start, end in indices[0]:
        spans.append([len(text[:start].encode()), len(text[:end].encode())])
    return text, spans


def pin_clock():
    from transformers.utils import chat_template_utils as ctu

    class Fixed(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.fromtimestamp(NOW, dt.timezone.utc).replace(tzinfo=None)

    ctu.datetime = Fixed


def main():
    import jinja2

    pin_clock()
    with open(os.path.join(DATA, "templates.json")) as f:
        templates = json.load(f)
    cases, failed = [], 0
    for ti, t in enumerate(templates):
        with open(os.path.join(DATA, t["file"]), encoding="utf-8") as f:
            source = f.read()
        for ci, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                case = {"template": ti, "conversation": ci, "add_generation_prompt": gen}
                try:
                    case["text"], spans = render(source, t["bos_token"], t["eos_token"], conv, gen)
                    if spans:
                        case["generation"] = spans
                except Exception as e:
                    if type(e) is jinja2.exceptions.TemplateError:  # raise_exception(message)
                        case["error"] = e.message
                    else:  # an undefined name, a type error: the template needs inputs these lack
                        case["failure"] = f"{type(e).__name__}: {e}"
                        failed += 1
                cases.append(case)
    print(f"{len(templates)} templates, {len(cases)} cases, {failed} failing in Python", file=sys.stderr)
    json.dump({"now": NOW, "context": CONTEXT, "templates": templates, "conversations": CONVERSATIONS,
               "cases": cases},
              sys.stdout, ensure_ascii=False, indent=1)
    print()


# ---- one-off import from llama.cpp's source tree ----

def cpp_literals(text, pos):
    """Decodes the C++ string literal(s) starting at pos (u8"", U8C(""),
    adjacent literals); returns the string."""
    out = []
    m = re.compile(r'\s*(?:U8C\(\s*)?(?:u8)?"')
    while True:
        lit = m.match(text, pos)
        if not lit:
            break
        i = lit.end()
        buf = bytearray()
        while text[i] != '"':
            c = text[i]
            if c == "\\":
                n = text[i + 1]
                buf += {"n": b"\n", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'", "r": b"\r"}[n]
                i += 2
            else:
                buf += c.encode()
                i += 1
        out.append(buf.decode())
        pos = i + 1
        close = re.compile(r"\s*\)").match(text, pos)
        if close and lit.group(0).lstrip().startswith("U8C"):
            pos = close.end()
    return "".join(out)


def slug(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def import_llamacpp(root):
    tdir = os.path.join(DATA, "templates")
    os.makedirs(tdir, exist_ok=True)
    entries, seen = [], set()

    def add(name, source, text, bos, eos):
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen or not text.strip():
            return
        seen.add(digest)
        fname = "templates/" + slug(name) + ".jinja"
        if any(e["file"] == fname for e in entries):  # a second template of one model
            fname = "templates/" + slug(name) + "-" + digest[:8] + ".jinja"
        with open(os.path.join(DATA, fname), "w", encoding="utf-8") as f:
            f.write(text)
        entries.append({"name": name, "source": source, "file": fname, "bos_token": bos, "eos_token": eos})

    cpp = open(os.path.join(root, "tests", "test-chat-template.cpp"), encoding="utf-8").read()
    for m in re.finditer(r'/\* \.name= \*/\s*"([^"]+)"', cpp):
        name = m.group(1)
        tpos = cpp.find("/* .template_str= */", m.end())
        text = cpp_literals(cpp, tpos + len("/* .template_str= */"))
        nxt = cpp.find("/* .name= */", tpos)
        fields = cpp[tpos:nxt if nxt > 0 else len(cpp)]
        bos = re.search(r'/\* \.bos_token= \*/\s*"([^"]*)"', fields)
        eos = re.search(r'/\* \.eos_token= \*/\s*"([^"]*)"', fields)
        name = re.sub(r"\s*\(.*\)$", "", name)
        add(name, "llama.cpp tests/test-chat-template.cpp (the model's tokenizer_config.json chat_template)",
            text, bos.group(1) if bos and bos.group(1) else "<s>", eos.group(1) if eos and eos.group(1) else "</s>")
    mdir = os.path.join(root, "models", "templates")
    for fn in sorted(os.listdir(mdir)):
        if not fn.endswith(".jinja") or fn.startswith("llama-cpp-"):  # llama.cpp's own, not a model's
            continue
        text = open(os.path.join(mdir, fn), encoding="utf-8").read()
        name = fn[:-len(".jinja")]
        llama = "llama" in name.lower() and "deepseek" not in name.lower()
        add(name, "llama.cpp models/templates/" + fn + " (fetched from the model's Hugging Face repository)",
            text, "<|begin_of_text|>" if llama else "<s>", "<|eot_id|>" if llama else "</s>")
    with open(os.path.join(DATA, "templates.json"), "w") as f:
        json.dump(entries, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(entries)} templates", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--import":
        import_llamacpp(sys.argv[2])
    else:
        main()
