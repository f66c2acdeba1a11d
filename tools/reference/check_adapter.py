#!/usr/bin/env python3
"""Load a LoRA adapter the way PEFT users do and check what it computes.

Needs (pip): torch (CPU), transformers==5.23.*, peft==0.21.*, safetensors.

    python tools/reference/check_adapter.py ADAPTER_DIR MODEL_DIR [--ids "1 2 3, 4 5 6"]
                                            [--compare LOGITS_FILE] [--atol 1e-4] [--rtol 1e-4]

ADAPTER_DIR holds adapter_model.safetensors and adapter_config.json (PEFT layout);
MODEL_DIR is a Hugging Face Llama folder. The script
  1. checks that every tensor in the adapter file is one PEFT expects, with the
     expected shape, and that PEFT loaded exactly those values (PEFT itself only
     warns about names it does not know, which would silently drop a LoRA);
  2. runs the model with the adapter on the input ids: those in LOGITS_FILE when it
     holds `input_ids`, else --ids (rows separated by commas), else fixed seeded ids
     (B=2, T=12);
  3. prints statistics of the logits and how far the adapter moves them;
  4. with --compare, compares against LOGITS_FILE: a safetensors file with a tensor
     `logits` (any shape holding B*T*V values) and optionally `input_ids`, or a raw
     little-endian float32 file of B*T*V values.
Exit status: 0 all checks pass, 1 a check fails, 2 bad arguments or unreadable files.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_common import default_input_ids, deterministic, load_base_model  # noqa: E402


def fail(msg, code=1):
    print("check_adapter: " + msg, file=sys.stderr)
    sys.exit(code)


def parse_ids(text):
    rows = [[int(x) for x in r.split()] for r in text.split(",") if r.strip()]
    if not rows or any(len(r) != len(rows[0]) for r in rows) or not rows[0]:
        fail("--ids: give rows of equal, non-zero length separated by commas", 2)
    return torch.tensor(rows, dtype=torch.int64)


def read_compare(path):
    """(logits as a flat float32 array, input_ids tensor or None)."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        t = load_file(path)
        if "logits" not in t:
            fail("%s: no tensor named 'logits'" % path, 2)
        ids = torch.from_numpy(t["input_ids"].astype(np.int64)) if "input_ids" in t else None
        return t["logits"].astype(np.float32).reshape(-1), ids
    raw = np.fromfile(path, dtype="<f4")
    return raw, None


def check_adapter_file(adapter_dir, pm):
    """Names, shapes and values of the adapter file against what PEFT holds after loading."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    file_t = load_file(path)
    loaded = get_peft_model_state_dict(pm)
    problems = []
    for name in sorted(set(file_t) - set(loaded)):
        problems.append("unexpected tensor %s (PEFT would ignore it)" % name)
    for name in sorted(set(loaded) - set(file_t)):
        problems.append("missing tensor %s" % name)
    for name in sorted(set(file_t) & set(loaded)):
        a, b = file_t[name], loaded[name]
        if tuple(a.shape) != tuple(b.shape):
            problems.append("%s: shape %s, expected %s" % (name, tuple(a.shape), tuple(b.shape)))
        elif not torch.equal(a.float(), b.float()):
            problems.append("%s: loaded values differ from the file" % name)
    return file_t, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter_dir")
    ap.add_argument("model_dir")
    ap.add_argument("--ids", help='input ids, rows separated by commas: "1 2 3, 4 5 6"')
    ap.add_argument("--compare", help="logits file to compare with (.safetensors or raw float32)")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()

    for f in ("adapter_model.safetensors", "adapter_config.json"):
        if not os.path.isfile(os.path.join(args.adapter_dir, f)):
            fail("%s: no %s" % (args.adapter_dir, f), 2)
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        fail("%s: no config.json" % args.model_dir, 2)
    deterministic()

    from peft import PeftModel

    with open(os.path.join(args.adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        acfg = json.load(f)
    base = load_base_model(args.model_dir)
    V = base.config.vocab_size
    pm = PeftModel.from_pretrained(base, args.adapter_dir)
    pm.eval()
    file_t, problems = check_adapter_file(args.adapter_dir, pm)
    print("adapter: %d tensors, r=%s alpha=%s rslora=%s targets=%s" % (
        len(file_t), acfg.get("r"), acfg.get("lora_alpha"), acfg.get("use_rslora"),
        ",".join(sorted(acfg.get("target_modules") or []))))

    ref, ids = (None, None)
    if args.compare:
        if not os.path.isfile(args.compare):
            fail("%s: no such file" % args.compare, 2)
        ref, ids = read_compare(args.compare)
    if ids is None:
        ids = parse_ids(args.ids) if args.ids else default_input_ids(V)
    if int(ids.min()) < 0 or int(ids.max()) >= V:
        fail("input ids must lie in [0, %d)" % V, 2)

    with torch.no_grad():
        logits = pm(input_ids=ids, use_cache=False).logits
        with pm.disable_adapter():
            base_logits = pm(input_ids=ids, use_cache=False).logits
    Bn, Tn = ids.shape
    print("inputs: B=%d T=%d" % (Bn, Tn))
    print("logits: shape %s mean %.6f std %.6f min %.6f max %.6f" % (
        tuple(logits.shape), float(logits.mean()), float(logits.std()), float(logits.min()), float(logits.max())))
    print("argmax of the last position per row: %s" % logits[:, -1].argmax(-1).tolist())
    print("adapter moves the logits by at most %.6g" % float((logits - base_logits).abs().max()))

    if ref is not None:
        got = logits.reshape(-1).numpy()
        if ref.size != got.size:
            problems.append("%s: %d values, expected B*T*V = %d" % (args.compare, ref.size, got.size))
        else:
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            bad = diff > args.atol + args.rtol * np.abs(got)
            print("compare: max abs diff %.3g, %d of %d values outside atol %g + rtol %g" % (
                float(diff.max()), int(bad.sum()), got.size, args.atol, args.rtol))
            if bad.any():
                i = int(np.argmax(diff))
                b, t, v = i // (Tn * V), (i // V) % Tn, i % V
                problems.append("logits differ at (b=%d, t=%d, v=%d): %.6f here, %.6f in %s" % (
                    b, t, v, float(got[i]), float(ref[i]), args.compare))
    for p in problems:
        print("MISMATCH: " + p)
    if problems:
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
