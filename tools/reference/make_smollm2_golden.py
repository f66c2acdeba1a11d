#!/usr/bin/env python3
"""Goldens of the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF), for
tests/test_real_model.c.

Needs (pip): torch (CPU), transformers==5.23.*, peft==0.21.*, gguf, safetensors;
for --train-adapter also a C compiler and the build dependencies of tune.

Run from the repository root after `make model`:
    python tools/reference/make_smollm2_golden.py [MODEL.gguf] [--train-adapter | --adapter DIR]

Transformers loads the same GGUF file (its own dequantisation, fp32, eager
attention, one thread, deterministic algorithms). For each fixed prompt:

  1. the prompt's token ids, fixed below and checked against the model's own
     tokenizer (read from the same GGUF file);
  2. the greedy continuation of GEN tokens: repeated full forwards (no KV
     cache), argmax (first index on ties), no repetition penalty, EOS does not
     stop (where EOS appears is recorded); checked against model.generate with
     its KV cache;
  3. one forward over prompt + continuation: for every position the top-K
     logit ids and values and the logsumexp of the row, and the whole logits
     row at the last prompt position; the argmax at position t equals the
     continuation token t + 1 (so a forward that reproduces these argmaxes
     reproduces the greedy generation);
  4. the mean cross-entropy of the prompt alone (labels = ids), as
     Transformers computes it.

An fp64 rerun of the same forwards measures how far fp32 arithmetic alone
moves the logits (golden.json -> fp64_check), a guide for test tolerances.

Then the adapter in tests/data/smollm2/adapter (trained by tune: with
--train-adapter, tools/reference/train_smollm2_adapter.c is built against
build/libtune.a and run; --adapter DIR copies one in; otherwise the committed
one is used) is loaded by PEFT onto the same model, and the prompts' top-K
logits, logsumexp and loss with it are recorded.

Writes tests/data/smollm2/golden.safetensors, adapter_golden.safetensors and
golden.json (contents in tools/reference/README.md).
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_common import deterministic, repo_root  # noqa: E402

MODEL = os.path.join("models", "SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OUT = os.path.join("tests", "data", "smollm2")
GEN = 32   # greedy tokens per prompt
TOPK = 20  # logits kept per position

# name, what is tokenized (plain text, or messages rendered by the model's
# chat template with the generation prompt), and its token ids: fixed here, so
# the goldens cannot drift with a tokenizer change unnoticed.
PROMPTS = [
    ("excel_ko",
     {"messages": [{"role": "system", "content": "You are an Excel expert."},
                   {"role": "user", "content": "엑셀 합계 함수는?"}]},
     [1, 9690, 198, 2683, 359, 354, 14651, 4507, 30, 2, 198, 1, 4093, 198, 183, 241, 235, 183, 223,
      218, 216, 33085, 119, 181, 128, 222, 216, 33085, 118, 183, 226, 242, 182, 228, 238, 47, 2, 198,
      1, 520, 9531, 198]),
    ("excel_en",
     {"messages": [{"role": "user", "content": "How do I sum a column in Excel?"}]},
     [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
      19712, 8182, 2, 198, 1, 4093, 198, 2020, 536, 339, 2028, 253, 4556, 281, 14651, 47, 2, 198, 1,
      520, 9531, 198]),
    ("english",
     {"text": "The quick brown fox jumps over the lazy dog. Paris is the capital of France, "
              "and Berlin is the capital of"},
     [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 7042, 314, 260, 3575, 282, 4649, 28,
      284, 11452, 314, 260, 3575, 282]),
    ("code",
     {"text": "def fibonacci(n):\n    if n < 2:\n        return n\n    return"},
     [1604, 3987, 46477, 24, 94, 727, 472, 585, 304, 2067, 216, 34, 42, 448, 1003, 304, 472, 1003]),
]


def render(tok, spec):
    if "text" in spec:
        return spec["text"]
    return tok.apply_chat_template(spec["messages"], tokenize=False, add_generation_prompt=True)


def greedy(model, ids, n):
    """n greedy tokens by full forwards; the top-1/top-2 margin of each step."""
    seq = list(ids)
    margins = []
    for _ in range(n):
        with torch.no_grad():
            row = model(torch.tensor([seq])).logits[0, -1]
        top2 = torch.topk(row, 2)
        nxt = int(torch.argmax(row))  # first index of the maximum
        margins.append(float(top2.values[0] - top2.values[1]))
        seq.append(nxt)
    return seq[len(ids):], margins


def adapter_golden(model, folder, name, prompts, base_tops):
    """PEFT loads the adapter in OUT/adapter (one tune trained and saved): every
    tensor of the file arrives in the model unchanged, no LoRA weight is left
    out, and its logits equal those of the base weights merged by hand
    (W + scaling·B·A). Returns the tensors and facts of adapter_golden.*."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adir = os.path.join(OUT, "adapter")
    with open(os.path.join(adir, "adapter_config.json")) as f:
        acfg = json.load(f)
    saved = load_file(os.path.join(adir, "adapter_model.safetensors"))
    peft_model = PeftModel.from_pretrained(model, adir)
    peft_model.eval()
    state = peft_model.state_dict()
    loaded = {k for k in state if ".lora_A." in k or ".lora_B." in k}
    expect = {k.replace(".weight", ".default.weight") for k in saved}
    assert loaded == expect, f"PEFT's LoRA weights {sorted(loaded ^ expect)[:4]} differ from the file's"
    for k, v in saved.items():
        assert torch.equal(state[k.replace(".weight", ".default.weight")], v), k
    scaling = acfg["lora_alpha"] / (math.sqrt(acfg["r"]) if acfg.get("use_rslora") else acfg["r"])
    for mod in peft_model.modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            assert abs(mod.scaling["default"] - scaling) < 1e-12

    merged = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                  attn_implementation="eager")
    merged.eval()
    msd = merged.state_dict()
    with torch.no_grad():
        for k, a in saved.items():
            if ".lora_A." not in k:
                continue
            b = saved[k.replace(".lora_A.", ".lora_B.")]
            w = k[len("base_model.model."):].replace(".lora_A.weight", ".weight")
            msd[w].add_(scaling * (b @ a))

    tensors, facts = {}, {"r": acfg["r"], "lora_alpha": acfg["lora_alpha"], "scaling": scaling,
                          "target_modules": acfg["target_modules"], "n_tensors": len(saved),
                          "merged_max_abs_diff": 0.0, "prompts": []}
    for pname, ids in prompts:
        x = torch.tensor([ids])
        with torch.no_grad():
            out = peft_model(x, labels=x)
            logits = out.logits[0]
            hand = merged(x).logits[0]
        facts["merged_max_abs_diff"] = max(facts["merged_max_abs_diff"], float((logits - hand).abs().max()))
        top = torch.topk(logits, TOPK, dim=-1)
        # How far the adapter moves the logits: the test must not pass with it ignored.
        base_ids, base_vals = base_tops[pname]
        change = float((logits.gather(1, base_ids[:len(ids)]) - base_vals[:len(ids)]).abs().max())
        tensors[f"{pname}.top_ids"] = top.indices.to(torch.int64).contiguous()
        tensors[f"{pname}.top_logits"] = top.values.float().contiguous()
        tensors[f"{pname}.logsumexp"] = torch.logsumexp(logits.double(), dim=-1).float()
        tensors[f"{pname}.loss"] = torch.tensor([float(out.loss)], dtype=torch.float64)
        gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
        facts["prompts"].append({"name": pname, "loss": float(out.loss), "max_change_vs_base": change,
                                 "min_top1_gap": min(gaps)})
        print(f"adapter {pname}: loss {float(out.loss):.6f}, logits moved up to {change:.3f} by the adapter, "
              f"min top-1 gap {min(gaps):.2e}", file=sys.stderr)
        assert change > 0.05, f"{pname}: the adapter barely changes the logits ({change})"
    # fp32 rounding alone moves these logits by ~1e-4 (see fp64_check); a wrong
    # scaling or a transposed A/B would move them by the adapter's effect (> 0.05).
    assert facts["merged_max_abs_diff"] < 1e-3, facts["merged_max_abs_diff"]
    return tensors, facts


def train_adapter(model_path, out_dir):
    """Builds tools/reference/train_smollm2_adapter.c against build/libtune.a
    and runs it: tune's training loop writes an adapter into out_dir."""
    subprocess.run(["make", "-s", "-j2", "build/libtune.a"], check=True)
    with open("Makefile") as f:
        pkgs = re.search(r"^PKGS\s*:=\s*(.*)$", f.read(), re.M).group(1).split()
    flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + pkgs, check=True, capture_output=True,
                           text=True).stdout.split()
    exe = os.path.join("build", "train_smollm2_adapter")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-fopenmp",
                    "-Iinclude", os.path.join("tools", "reference", "train_smollm2_adapter.c"),
                    os.path.join("build", "libtune.a")] + flags + ["-fopenmp", "-lm", "-o", exe], check=True)
    subprocess.run([exe, model_path, os.path.join(OUT, "golden.safetensors"), out_dir], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", help="the GGUF file (default " + MODEL + ")")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--train-adapter", action="store_true",
                     help="train a new " + OUT + "/adapter with tune (tools/reference/train_smollm2_adapter.c)")
    src.add_argument("--adapter", help="a folder with an adapter tune trained on this model "
                     "(adapter_model.safetensors, adapter_config.json): copied into " + OUT + "/adapter")
    args = ap.parse_args()
    path = os.path.abspath(args.model) if args.model else os.path.join(repo_root(), MODEL)
    adapter = os.path.abspath(args.adapter) if args.adapter else None
    os.chdir(repo_root())
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert sha == MODEL_SHA256, f"{path}: SHA-256 {sha} is not the pinned model's"

    deterministic()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    model64 = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                   attn_implementation="eager").double()
    model64.eval()
    eos = model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    V = model.config.vocab_size

    tensors = {}
    meta = {"model": os.path.basename(MODEL), "model_sha256": sha, "vocab_size": V, "gen": GEN,
            "topk": TOPK, "eos_token_ids": sorted(eos_ids),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "prompts": []}
    fp64 = {"logits_max_abs_diff": 0.0, "logits_max_rel_diff": 0.0, "loss_max_abs_diff": 0.0}
    for pname, spec, expected in PROMPTS:
        text = render(tok, spec)
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == expected, f"{pname}: the tokenizer gives {ids}"
        assert tok.decode(ids) == text, pname
        n = len(ids)

        cont, margins = greedy(model, ids, GEN)
        # The same with Transformers' generate (KV cache); EOS must not stop it.
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=GEN, do_sample=False,
                                 repetition_penalty=1.0, eos_token_id=None, pad_token_id=0,
                                 attention_mask=torch.ones(1, n, dtype=torch.long))
        gen_cont = out[0, n:].tolist()

        seq = torch.tensor([ids + cont])
        with torch.no_grad():
            logits = model(seq).logits[0]  # (n + GEN, V)
            logits64 = model64(seq).logits[0]
            loss = float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss)
            loss64 = float(model64(torch.tensor([ids]), labels=torch.tensor([ids])).loss)
            prompt_logits = model(torch.tensor([ids])).logits[0]
        # Teacher-forced argmaxes are the greedy tokens; hand-written loss.
        am = torch.argmax(logits, dim=-1).tolist()
        assert am[n - 1:n - 1 + GEN] == cont, pname
        tgt = torch.tensor(ids[1:])
        hand = float(F.cross_entropy(logits[:n - 1].double(), tgt))
        assert abs(hand - loss) < 1e-5, (pname, hand, loss)
        assert torch.allclose(prompt_logits, logits[:n], atol=1e-4, rtol=0), pname

        top = torch.topk(logits, TOPK, dim=-1)
        assert torch.equal(top.indices[:, 0], torch.argmax(logits, dim=-1)), pname
        lse = torch.logsumexp(logits.double(), dim=-1)
        d = (logits.double() - logits64).abs()
        fp64["logits_max_abs_diff"] = max(fp64["logits_max_abs_diff"], float(d.max()))
        fp64["logits_max_rel_diff"] = max(fp64["logits_max_rel_diff"],
                                          float((d / logits64.abs().clamp(min=1.0)).max()))
        fp64["loss_max_abs_diff"] = max(fp64["loss_max_abs_diff"], abs(loss - loss64))

        gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
        tensors[f"{pname}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"{pname}.greedy_ids"] = torch.tensor(cont, dtype=torch.int64)
        tensors[f"{pname}.top_ids"] = top.indices.to(torch.int64).contiguous()
        tensors[f"{pname}.top_logits"] = top.values.float().contiguous()
        tensors[f"{pname}.logsumexp"] = lse.float()
        tensors[f"{pname}.last_logits"] = logits[n - 1].float().contiguous()
        tensors[f"{pname}.loss"] = torch.tensor([loss], dtype=torch.float64)
        meta["prompts"].append({
            "name": pname, "messages": spec.get("messages"), "text": text, "n_prompt": n, "input_ids": ids,
            "greedy_ids": cont, "greedy_text": tok.decode(cont),
            "eos_positions": [i for i, t in enumerate(cont) if t in eos_ids],
            "generate_agrees": gen_cont == cont, "loss": loss,
            "min_top1_gap": min(gaps), "min_greedy_margin": min(margins),
        })
        print(f"{pname}: {n} tokens, loss {loss:.6f}, min top-1 gap {min(gaps):.2e}, "
              f"continuation {tok.decode(cont)!r}", file=sys.stderr)
        if gen_cont != cont:
            print(f"  generate() differs: {tok.decode(gen_cont)!r}", file=sys.stderr)
    meta["fp64_check"] = fp64

    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "golden.safetensors"), metadata={"format": "pt"})
    with tempfile.TemporaryDirectory() as tmp:
        if args.train_adapter:
            adapter = os.path.join(tmp, "run")
            train_adapter(path, adapter)
        if adapter:
            os.makedirs(os.path.join(OUT, "adapter"), exist_ok=True)
            for f in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copyfile(os.path.join(adapter, f), os.path.join(OUT, "adapter", f))
    if os.path.isdir(os.path.join(OUT, "adapter")):
        prompts = [(p["name"], p["input_ids"]) for p in meta["prompts"]]
        base_tops = {p: (tensors[f"{p}.top_ids"], tensors[f"{p}.top_logits"]) for p, _ in prompts}
        atensors, meta["adapter"] = adapter_golden(model, folder, name, prompts, base_tops)
        save_file(atensors, os.path.join(OUT, "adapter_golden.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("fp64 check:", fp64, file=sys.stderr)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
