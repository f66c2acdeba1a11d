#!/usr/bin/env python3
"""Fixtures for tests/test_safetensors.c and tests/test_model_load.c.

Needs (pip): torch, safetensors, transformers.
Run from the repository root:  python tools/reference/make_safetensors_fixtures.py

Writes into tests/data/model_load/:
  tied/          tiny LlamaForCausalLM, fp32, tie_word_embeddings true
  untied_bf16/   untied, saved in bfloat16, llama3 rope scaling
  sharded_f16/   untied, float16, split into several shards with an index
  <folder>/golden.json  every weight as PyTorch reads it, in fp32:
                 shape, sum (float64) and the first 8 values
  writer_ref.safetensors  tensors of every dtype written by safetensors'
                 own save_file (to compare the C writer's bytes with)
  convert.safetensors     fp32 values with their bf16 / fp16 roundings as
                 torch computes them (conversion golden)
"""
import json
import math
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join("tests", "data", "model_load")


def tiny_config(**kw):
    base = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                max_position_embeddings=128, rms_norm_eps=1e-5)
    base.update(kw)
    return LlamaConfig(**base)


def make_model(name, seed, dtype, shard=None, **cfg):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(**cfg))
    with torch.no_grad():
        for p in model.parameters():  # norms too, so every tensor is informative
            p.normal_(0.0, 0.5)
    model = model.to(dtype)
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    gen = os.path.join(path, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    golden = {}
    for key, t in model.state_dict().items():
        v = t.detach().to(torch.float32).reshape(-1)
        golden[key] = {"shape": list(t.shape), "sum": float(v.double().sum()),
                       "first": [float(x) for x in v[:8]]}
    with open(os.path.join(path, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


def writer_reference():
    g = torch.Generator().manual_seed(7)
    t = {
        "b.weight": torch.randn(2, 3, generator=g),
        "a.weight": torch.randn(3, 2, generator=g).to(torch.bfloat16),
        "half": torch.randn(5, generator=g).to(torch.float16),
        "input_ids": torch.tensor([[1, 2, 3], [-100, 2**40, 7]], dtype=torch.int64),
        "i32": torch.tensor([-5, 6], dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "i16": torch.tensor([-300], dtype=torch.int16),
        "f64": torch.tensor([1.0 / 3.0], dtype=torch.float64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        'odd "name"\\\n\t\u00fc\x01': torch.ones(1),
    }
    save_file(t, os.path.join(OUT, "writer_ref.safetensors"), metadata={"format": "pt"})


def conversion_reference():
    special = [0.0, -0.0, 1.0, -1.0, 1.0 / 3.0, 65504.0, 65519.0, 65520.0, -70000.0,
               1e-8, 6e-8, 2.0 ** -25, 1.5 * 2.0 ** -24, 2.0 ** -24, 2.0 ** -14,
               0.99999 * 2.0 ** -14, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -11,
               1 + 3 * 2.0 ** -11, 3.4e38, -3.4e38, 1e-40, float("inf"), float("-inf"),
               float("nan")]
    g = torch.Generator().manual_seed(11)
    rand = torch.randn(200, generator=g) * torch.exp(torch.randn(200, generator=g) * 6)
    x = torch.cat([torch.tensor(special, dtype=torch.float32), rand])
    assert not any(math.isnan(v) for v in rand.tolist())
    save_file({"f32": x, "bf16": x.to(torch.bfloat16), "f16": x.to(torch.float16)},
              os.path.join(OUT, "convert.safetensors"), metadata={"format": "pt"})


def main():
    os.makedirs(OUT, exist_ok=True)
    make_model("tied", 1, torch.float32, tie_word_embeddings=True)
    make_model("untied_bf16", 2, torch.bfloat16, tie_word_embeddings=False, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
               bos_token_id=5, eos_token_id=[6, 7])
    make_model("sharded_f16", 3, torch.float16, shard="4KB", tie_word_embeddings=False)
    writer_reference()
    conversion_reference()


if __name__ == "__main__":
    main()
