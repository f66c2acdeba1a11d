#!/usr/bin/env python3
"""Hugging Face LLaMA folders with random weights, for tools/gpu/check.sh.

usage: make_models.py OUTDIR [smollm2] [llama1b]

Each folder gets config.json, model.safetensors (fp32; normal std 0.02 like
the HF initializer, RMSNorm weights 1, tied embeddings so no lm_head.weight)
and SmolLM2's tokenizer.json + tokenizer_config.json from tests/data. Its ids
are all below 49152, so the same tokenizer serves the 128256-entry vocabulary
of the llama1b shape. The weights are drawn with a fixed seed (on the GPU when
there is one, which is much faster for the 1.2B shape). The config is written
in the long-standing flat form (rope_theta, rope_scaling), which every
Transformers version and tune read.
"""
import json
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

TOKENIZER_DIR = os.path.join("tests", "data", "tokenizer", "smollm2")

SHAPES = {
    # SmolLM2-135M
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                    vocab_size=49152, rope_theta=100000.0, rope_scaling=None,
                    max_position_embeddings=8192, rms_norm_eps=1e-5),
    # Llama-3.2-1B
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                    vocab_size=128256, rope_theta=500000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192},
                    max_position_embeddings=131072, rms_norm_eps=1e-5),
}


def token_ids():
    """bos/eos/pad ids from SmolLM2's tokenizer files."""
    tok = json.load(open(os.path.join(TOKENIZER_DIR, "tokenizer.json"), encoding="utf-8"))
    cfg = json.load(open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json"), encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    ids.update({k: v for k, v in tok["model"]["vocab"].items() if k not in ids})

    def look(key):
        name = cfg.get(key)
        if isinstance(name, dict):
            name = name.get("content")
        return ids.get(name) if name is not None else None
    return look("bos_token"), look("eos_token"), look("pad_token")


def write_model(out, name, seed):
    s = SHAPES[name]
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    bos, eos, pad = token_ids()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    config.update(s)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, fn), os.path.join(folder, fn))

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)

    def normal(*shape):
        return (torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32) * 0.02).cpu()

    H, I = s["hidden_size"], s["intermediate_size"]
    q, kv = s["num_attention_heads"] * s["head_dim"], s["num_key_value_heads"] * s["head_dim"]
    t = {"model.embed_tokens.weight": normal(s["vocab_size"], H)}
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = normal(q, H)
        t[p + "self_attn.k_proj.weight"] = normal(kv, H)
        t[p + "self_attn.v_proj.weight"] = normal(kv, H)
        t[p + "self_attn.o_proj.weight"] = normal(H, q)
        t[p + "mlp.gate_proj.weight"] = normal(I, H)
        t[p + "mlp.up_proj.weight"] = normal(I, H)
        t[p + "mlp.down_proj.weight"] = normal(H, I)
        t[p + "input_layernorm.weight"] = torch.ones(H)
        t[p + "post_attention_layernorm.weight"] = torch.ones(H)
    t["model.norm.weight"] = torch.ones(H)
    save_file(t, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    n = sum(v.numel() for v in t.values())
    return folder, n


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    names = sys.argv[2:] or list(SHAPES)
    for name in names:
        t0 = time.time()
        folder, n = write_model(out, name, seed=1234 + list(SHAPES).index(name))
        print(f"{name}: {n:,} parameters -> {folder} ({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
