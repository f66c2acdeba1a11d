#!/usr/bin/env python3
"""Ground truth for tune's inference: greedy continuations with their per-step
logits, full-sequence logits, and Transformers' sampling logits processors.

Needs (pip): torch (CPU), transformers==5.23.*, peft==0.21.*, tokenizers==0.23.*, safetensors.

Run from anywhere:  python tools/reference/make_generate_golden.py
Writes tests/data/generate/golden.safetensors and golden.json (see
tools/reference/README.md, section "Generation goldens").

    python tools/reference/make_generate_golden.py --check-merged DIR [--base B --adapter A]

loads DIR (a folder written by `tune merge B A DIR --dtype f32`; by default
B = tests/data/tiny/gqa, A = tests/data/tiny/peft_adapter) with Transformers
and compares its logits with the base model + PEFT adapter; exit 0 when they
agree. B may be a GGUF file (Transformers dequantises it).

    python tools/reference/make_generate_golden.py --make-adapter GGUF_OR_DIR OUT

writes a PEFT LoRA adapter (r 8, alpha 16, all seven modules, B ~ N(0, 0.02))
for a model, to try `tune merge` on models other than the tiny ones.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_common import TINY_DIR, deterministic, load_base_model, repo_root  # noqa: E402

OUT_DIR = os.path.join("tests", "data", "generate")
MODEL = os.path.join(TINY_DIR, "gqa")
ADAPTER = os.path.join(TINY_DIR, "peft_adapter")
N_NEW = 16
# A user message with Korean text, so continuations start after multi-byte prompt tokens.
MESSAGES = [{"role": "user", "content": "=SUM(A1:A10) 합계는?"}]
# Sampling processor cases: (name, settings). Each is applied, in Transformers'
# order, to random logits after a random token history.
PROCESSOR_CASES = [
    ("penalty", dict(repetition_penalty=1.3)),
    ("temperature", dict(temperature=0.7)),
    ("top_k", dict(top_k=20)),
    ("top_p", dict(top_p=0.8)),
    ("all", dict(repetition_penalty=1.2, temperature=0.6, top_k=50, top_p=0.9)),
    ("top_k_ties", dict(top_k=3)),
]


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def peft_model(model_dir, adapter_dir):
    from peft import PeftModel

    pm = PeftModel.from_pretrained(load_base_model(model_dir), adapter_dir)
    pm.eval()
    return pm


def greedy(model, prompt_ids, repetition_penalty=None):
    """model.generate greedy for N_NEW tokens with EOS disabled: (new ids, raw logits (N_NEW, V))."""
    kw = dict(max_new_tokens=N_NEW, do_sample=False, eos_token_id=None, pad_token_id=0,
              return_dict_in_generate=True, output_logits=True, output_scores=True,
              top_k=None, top_p=None, temperature=None)
    if repetition_penalty is not None:
        kw["repetition_penalty"] = repetition_penalty
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), **kw)
    new = out.sequences[0, len(prompt_ids):]
    assert new.numel() == N_NEW, new.numel()
    logits = torch.stack([s[0] for s in out.logits])
    # Greedy picks the argmax of the processed scores (raw logits without a penalty).
    scores = torch.stack([s[0] for s in out.scores])
    assert torch.equal(scores.argmax(-1), new)
    if repetition_penalty is None:
        assert torch.equal(scores, logits)
    return new, logits


def full_logits(model, ids):
    """One forward over the whole sequence: (T, V)."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def processors(settings):
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    procs = LogitsProcessorList()  # Transformers' order: penalty, then temperature, top-k, top-p
    if "repetition_penalty" in settings:
        procs.append(RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]))
    if "temperature" in settings:
        procs.append(TemperatureLogitsWarper(settings["temperature"]))
    if "top_k" in settings:
        procs.append(TopKLogitsWarper(settings["top_k"]))
    if "top_p" in settings:
        procs.append(TopPLogitsWarper(settings["top_p"]))
    return procs


def processor_goldens(tensors, V):
    g = torch.Generator().manual_seed(77)
    cases = []
    for i, (name, settings) in enumerate(PROCESSOR_CASES):
        logits = torch.randn(V, generator=g) * 3.0
        if name == "top_k_ties":  # ties at the k-th value are all kept
            logits[[5, 9, 11, 40]] = 30.0
        history = torch.randint(0, V, (24,), generator=g)
        out = processors(settings)(history[None], logits[None].clone())[0]
        kept = int(torch.isfinite(out).sum())
        assert 0 < kept <= V
        if "top_k" in settings and name == "top_k_ties":
            assert kept == 4, kept
        tensors["proc%d.logits" % i] = logits.contiguous()
        tensors["proc%d.history" % i] = history.contiguous()
        tensors["proc%d.out" % i] = out.contiguous()  # -inf where filtered
        cases.append(dict(name=name, settings=settings, kept=kept))
    return cases


def make():
    from transformers import AutoTokenizer

    os.chdir(repo_root())
    deterministic()
    tok = AutoTokenizer.from_pretrained(MODEL)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    V = load_base_model(MODEL).config.vocab_size

    tensors = {"prompt_ids": torch.tensor(prompt_ids, dtype=torch.int64)}
    runs = {}
    for name, make_model, penalty in [("base", lambda: load_base_model(MODEL), None),
                                      ("adapter", lambda: peft_model(MODEL, ADAPTER), None),
                                      ("penalty", lambda: load_base_model(MODEL), 1.5)]:
        model = make_model()
        new, logits = greedy(model, prompt_ids, penalty)
        seq = prompt_ids + new.tolist()
        full = full_logits(model, seq)
        # Step s's logits are those of position len(prompt) - 1 + s in the full forward.
        assert torch.allclose(full[len(prompt_ids) - 1:-1], logits, atol=1e-5, rtol=0)
        tensors[name + ".ids"] = new.to(torch.int64).contiguous()
        tensors[name + ".logits"] = logits.contiguous()
        tensors[name + ".full_logits"] = full.contiguous()
        runs[name] = dict(ids=new.tolist(), text=tok.decode(new.tolist(), skip_special_tokens=False),
                          repetition_penalty=penalty)
    assert runs["base"]["ids"] != runs["adapter"]["ids"]  # the adapter changes the continuation
    cases = processor_goldens(tensors, V)

    os.makedirs(OUT_DIR, exist_ok=True)
    save_file(tensors, os.path.join(OUT_DIR, "golden.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(OUT_DIR, "golden.json"), dict(
        model=MODEL, adapter=ADAPTER, messages=MESSAGES, prompt=prompt, prompt_ids=prompt_ids,
        max_new_tokens=N_NEW, runs=runs, processor_cases=cases))
    print("wrote", OUT_DIR, {k: v["ids"][:6] for k, v in runs.items()})


def load_any(path):
    """A Hugging Face folder, or a GGUF file dequantised by Transformers, in fp32."""
    from transformers import AutoModelForCausalLM

    if path.endswith(".gguf"):
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path) or ".", gguf_file=os.path.basename(path),
                                                     dtype=torch.float32, attn_implementation="eager")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def check_merged(merged_dir, base, adapter):
    """Transformers loads the merged folder; its logits equal base + adapter."""
    from peft import PeftModel

    os.chdir(repo_root())
    deterministic()
    merged = load_any(merged_dir)
    golden = json.load(open(os.path.join(OUT_DIR, "golden.json"), encoding="utf-8"))
    ids = golden["prompt_ids"] + golden["runs"]["adapter"]["ids"]
    reference = PeftModel.from_pretrained(load_any(base), adapter)
    reference.eval()
    want = full_logits(reference, ids)
    got = full_logits(merged, ids)
    diff = float((want - got).abs().max())
    # 1e-5 for the tiny models; deeper ones add rounding with their depth and logit size.
    layers = merged.config.num_hidden_layers
    tol = 1e-5 if layers <= 2 else 1e-5 * layers * float(want.abs().max())
    print("merged folder %s: %s, %d parameters, max |logits - (base + adapter)| = %.3g (max |logit| %.3g, "
          "tolerance %.3g)" % (merged_dir, type(merged).__name__, sum(p.numel() for p in merged.parameters()), diff,
                               float(want.abs().max()), tol))
    return 0 if diff <= tol else 1


def make_adapter(base, out_dir):
    from peft import LoraConfig, get_peft_model

    deterministic()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pm = get_peft_model(load_any(base), LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    pm.save_pretrained(out_dir)
    print("wrote", out_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-merged", metavar="DIR")
    ap.add_argument("--base", help="the merged model's base, folder or .gguf (default: the tiny gqa model)")
    ap.add_argument("--adapter", help="the merged adapter (default: the tiny PEFT adapter)")
    ap.add_argument("--make-adapter", nargs=2, metavar=("BASE", "OUT"))
    args = ap.parse_args()
    if args.check_merged:
        base = os.path.abspath(args.base) if args.base else os.path.join(repo_root(), MODEL)
        adapter = os.path.abspath(args.adapter) if args.adapter else os.path.join(repo_root(), ADAPTER)
        sys.exit(check_merged(os.path.abspath(args.check_merged), base, adapter))
    if args.make_adapter:
        make_adapter(os.path.abspath(args.make_adapter[0]), os.path.abspath(args.make_adapter[1]))
        return
    make()


if __name__ == "__main__":
    main()
