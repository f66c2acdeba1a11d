#!/usr/bin/env python3
"""Report the tensor types of quantised GGUF files and check that they load in
Transformers and in llama.cpp.

Needs: pip install gguf numpy (types); torch transformers (--transformers)

    python tools/reference/check_quant_gguf.py FILE.gguf [FILE.gguf ...]
        [--transformers] [--llama-simple PATH] [--prompt TEXT] [-n N] [--json OUT]

For each file: size, bits per weight, the count of tensors of each ggml type,
and the types of each tensor role (token_embd, output, attn_q, ..., ffn_down;
the layer numbers with each type). With --transformers the file is loaded by
AutoModelForCausalLM.from_pretrained(folder, gguf_file=name) (which
dequantises every tensor to fp32 with gguf-py) and greedily continues PROMPT
for N tokens; with --llama-simple the same prompt goes through llama.cpp's
llama-simple (greedy, stops at an end-of-generation token), and the two texts
are compared. They may part after a few tokens: llama.cpp multiplies with the
activations quantised to 8 bits (Q8_0/Q8_K), Transformers in fp32. Exit 1 when
a load fails.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

import gguf


def role_of(name: str) -> tuple[str, int | None]:
    m = re.match(r"blk\.(\d+)\.(.+)\.weight$", name)
    if m:
        return m.group(2), int(m.group(1))
    return name.removesuffix(".weight"), None


def type_report(path: str) -> dict:
    r = gguf.GGUFReader(path)
    counts: collections.Counter = collections.Counter()
    roles: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    n_elems = 0
    for t in r.tensors:
        qt = gguf.GGMLQuantizationType(t.tensor_type).name
        counts[qt] += 1
        n_elems += int(t.n_elements)
        role, layer = role_of(t.name)
        roles[role][qt].append(layer)
    size = os.path.getsize(path)
    ft = r.get_field("general.file_type")
    file_type = int(ft.contents()) if ft is not None else None
    try:
        file_type_name = gguf.LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    out_roles = {}
    for role, by_type in roles.items():
        out_roles[role] = {qt: ([x for x in layers if x is not None] if any(x is not None for x in layers) else None)
                           for qt, layers in by_type.items()}
    return {"file": os.path.basename(path), "bytes": size, "file_type": file_type_name,
            "bits_per_weight": round(8 * size / n_elems, 3), "type_counts": dict(sorted(counts.items())),
            "roles": out_roles}


def layers_text(layers: list | None) -> str:
    if layers is None:
        return ""
    layers = sorted(layers)
    runs, start, prev = [], None, None
    for x in layers:
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            runs.append((start, prev))
            start = prev = x
    runs.append((start, prev))
    return " [" + ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) + "]"


def print_report(rep: dict) -> None:
    print(f"{rep['file']}: {rep['bytes']} bytes, {rep['bits_per_weight']} bits/weight, file_type {rep['file_type']}")
    print("  counts: " + ", ".join(f"{k} {v}" for k, v in rep["type_counts"].items()))
    for role, by_type in rep["roles"].items():
        print(f"  {role:<14} " + "; ".join(f"{qt}{layers_text(ls)}" for qt, ls in by_type.items()))


def transformers_greedy(path: str, prompt: str, n: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    ids = tok(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    with torch.no_grad():
        # An explicit mask: generate would mask prompt tokens equal to the pad
        # token (SmolLM2's pad is <|im_end|>, which chat prompts contain).
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             use_cache=True,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
    new = out[0, ids.shape[1]:].tolist()
    # llama-simple stops at an end-of-generation token and prints no special
    # tokens: compare the text without them.
    return {"prompt_ids": ids[0].tolist(), "ids": new, "text": tok.decode(new, skip_special_tokens=True),
            "class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}


def llama_simple(binary: str, path: str, prompt: str, n: int) -> dict:
    p = subprocess.run([binary, "-m", path, "-n", str(n), prompt], capture_output=True, text=True,
                       errors="backslashreplace", timeout=600)
    if p.returncode != 0:
        return {"ok": False, "stderr_tail": p.stderr[-2000:]}
    text = p.stdout.rstrip("\n")
    if text.startswith(prompt):
        text = text[len(prompt):]
    m = re.search(r"decoded (\d+) tokens", p.stderr)
    return {"ok": True, "text": text, "decoded": int(m.group(1)) if m else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--transformers", action="store_true")
    ap.add_argument("--llama-simple", dest="llama_simple")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("-n", type=int, default=12)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    failed = False
    results = []
    for path in args.files:
        rep = type_report(path)
        print_report(rep)
        if args.transformers:
            try:
                rep["transformers"] = transformers_greedy(path, args.prompt, args.n)
                print(f"  transformers: {rep['transformers']['class']}, {rep['transformers']['parameters']} "
                      f"parameters, greedy {rep['transformers']['text']!r}")
            except Exception as e:  # report and go on with the other files
                failed = True
                rep["transformers"] = {"error": f"{type(e).__name__}: {e}"}
                print(f"  transformers: FAILED {rep['transformers']['error']}")
        if args.llama_simple:
            ls = llama_simple(args.llama_simple, path, args.prompt, args.n)
            rep["llama_simple"] = ls
            if not ls["ok"]:
                failed = True
                print("  llama-simple: FAILED\n" + ls["stderr_tail"])
            else:
                print(f"  llama-simple: greedy {ls['text']!r} ({ls['decoded']} tokens)")
                if "text" in rep.get("transformers", {}):
                    t, l = rep["transformers"]["text"], ls["text"]
                    common = 0
                    while common < min(len(t), len(l)) and t[common] == l[common]:
                        common += 1
                    rep["texts_agree_chars"] = common
                    print("  same text" if t == l else f"  texts agree for the first {common} characters")
        results.append(rep)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
