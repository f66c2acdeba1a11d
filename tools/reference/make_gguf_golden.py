#!/usr/bin/env python3
"""Golden files for tune's GGUF reader (tests/test_gguf.c).

Needs: pip install gguf numpy torch transformers

Run from the repository root:
    python tools/reference/make_gguf_golden.py            # synthetic files only
    python tools/reference/make_gguf_golden.py --real models/SmolLM2-135M-Instruct.Q4_1.gguf

Writes into tests/data/gguf/:
  types_v3.gguf, types_v2.gguf   every metadata value type (scalars, arrays of
                                 each, arrays of strings, a nested array) and
                                 F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors quantised
                                 by gguf.quants, plus an IQ2_XXS tensor tune
                                 must refuse (tune/quant.h has no IQ quants);
                                 v2 is the same layout with version 2 and a
                                 64-byte alignment (the other block types are
                                 checked by make_quant_golden.py's goldens)
  types_expected.json            metadata values and dequantised tensor values
                                 (gguf.quants.dequantize)
  tiny_llama.gguf                a 2-layer LLaMA written the way llama.cpp's
                                 converter writes one (q/k rows permuted for
                                 ggml's RoPE), mixed tensor types, untied output
  tiny_llama_expected.json       its config and weights as Transformers reads
                                 them (AutoModelForCausalLM, gguf_file=...)
  llama3_rope.gguf               metadata-only file with the rope_freqs tensor
                                 llama.cpp's converter writes for Llama 3.2's
                                 llama3 RoPE scaling (factor 32, low 1, high 4,
                                 original context 8192, theta 500000)
  smollm2_expected.json          (--real) config and tensor checks of the real
                                 SmolLM2-135M-Instruct Q4_1 file as Transformers
                                 reads it

Tensor checks are: the shape in the Hugging Face layout, the first and last
8 values, sum, sum of absolute values, and a position-weighted sum
sum(v[i] * (i % 97 + 1)) that changes when rows are permuted.
"""
import argparse
import json
import os
import struct
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

OUT = os.path.join("tests", "data", "gguf")


def checks(t: np.ndarray) -> dict:
    flat = np.asarray(t, dtype=np.float32).reshape(-1)
    d = flat.astype(np.float64)
    w = (np.arange(d.size) % 97 + 1).astype(np.float64)
    return {
        "shape": list(t.shape),
        "first": [float(x) for x in flat[:8]],
        "last": [float(x) for x in flat[-8:]],
        "sum": float(d.sum()),
        "sum_abs": float(np.abs(d).sum()),
        "weighted_sum": float((d * w).sum()),
    }


def quantised(values: np.ndarray, qtype: QT) -> tuple[np.ndarray, np.ndarray]:
    """(raw bytes to store, values a reader must produce)."""
    if qtype == QT.F32:
        return values.astype(np.float32), values.astype(np.float32)
    if qtype == QT.F16:
        h = values.astype(np.float16)
        return h, h.astype(np.float32)
    q = gguf.quants.quantize(values.astype(np.float32), qtype)
    return q, gguf.quants.dequantize(q, qtype).astype(np.float32).reshape(values.shape)


# ---------------------------------------------------------------- synthetic types

METADATA = [
    # key, value type, value, array element type
    ("test.u8", VT.UINT8, 200, None),
    ("test.i8", VT.INT8, -100, None),
    ("test.u16", VT.UINT16, 60000, None),
    ("test.i16", VT.INT16, -30000, None),
    ("test.u32", VT.UINT32, 4000000000, None),
    ("test.i32", VT.INT32, -2000000000, None),
    ("test.f32", VT.FLOAT32, 0.1, None),
    ("test.bool_true", VT.BOOL, True, None),
    ("test.bool_false", VT.BOOL, False, None),
    ("test.string", VT.STRING, "héllo, 세계 \u2581\u0120", None),
    ("test.u64", VT.UINT64, 9000000000000000000, None),
    ("test.i64", VT.INT64, -9000000000000000000, None),
    ("test.f64", VT.FLOAT64, 3.141592653589793, None),
    ("test.arr_u8", VT.ARRAY, [0, 1, 255], VT.UINT8),
    ("test.arr_i8", VT.ARRAY, [-128, 0, 127], VT.INT8),
    ("test.arr_u16", VT.ARRAY, [0, 65535], VT.UINT16),
    ("test.arr_i16", VT.ARRAY, [-32768, 32767], VT.INT16),
    ("test.arr_u32", VT.ARRAY, [1, 4294967295], VT.UINT32),
    ("test.arr_i32", VT.ARRAY, [-2147483648, 5, 2147483647], VT.INT32),
    ("test.arr_f32", VT.ARRAY, [0.5, -1.25, 1e-8], VT.FLOAT32),
    ("test.arr_bool", VT.ARRAY, [True, False, True], VT.BOOL),
    ("test.arr_str", VT.ARRAY, ["a", "", "Ġthe", "<|im_end|>", "한국어"], VT.STRING),
    ("test.arr_u64", VT.ARRAY, [0, 9223372036854775807], VT.UINT64),
    ("test.arr_i64", VT.ARRAY, [-9223372036854775808, 1], VT.INT64),
    ("test.arr_f64", VT.ARRAY, [2.5, -1e300], VT.FLOAT64),
    ("test.nested", VT.ARRAY, [[1, 2], [3]], VT.ARRAY),
]


def type_tensors(rng: np.random.Generator) -> list[tuple[str, QT, np.ndarray]]:
    f16_special = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 6e-8, -6e-8,
                            6.1035e-5, 3.0e-5, 0.333, 1000.5], dtype=np.float32)
    return [
        ("t_f32", QT.F32, rng.standard_normal((2, 3, 4)).astype(np.float32)),
        ("t_f16", QT.F16, f16_special.reshape(3, 4)),
        ("t_bf16", QT.BF16, (rng.standard_normal((2, 32)) * 10).astype(np.float32)),
        ("t_q8_0", QT.Q8_0, rng.standard_normal((2, 64)).astype(np.float32)),
        ("t_q4_0", QT.Q4_0, rng.standard_normal((2, 64)).astype(np.float32)),
        ("t_q4_1", QT.Q4_1, (rng.standard_normal((3, 32)) + 0.5).astype(np.float32)),
        ("t_1d", QT.F32, np.arange(5, dtype=np.float32)),
    ]


def write_types(path: str, version: int, alignment: int) -> dict:
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, "test")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    for key, vt, val, sub in METADATA:
        w.add_key_value(key, val, vt, sub_type=sub)
    tensors = {}
    for name, qt, values in type_tensors(rng):
        raw, expect = quantised(values, qt)
        w.add_tensor(name, raw, raw_dtype=qt)
        tensors[name] = {"type": qt.name, "ne": list(reversed(values.shape)),
                         "values": [float(x) for x in expect.reshape(-1)]}
    # A type tune does not dequantise: 256 elements of IQ2_XXS (66 bytes).
    w.add_tensor("t_iq2_xxs", rng.integers(0, 255, (1, 66), dtype=np.uint8), raw_dtype=QT.IQ2_XXS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", version))
    meta = {}
    for key, vt, val, sub in METADATA:
        if vt == VT.FLOAT32:
            val = float(np.float32(val))
        elif sub == VT.FLOAT32:
            val = [float(np.float32(v)) for v in val]
        meta[key] = {"type": vt.name if sub is None else "ARRAY", "elem_type": sub.name if sub is not None else None,
                     "value": val}
    return {"alignment": alignment, "metadata": meta, "tensors": tensors}


# ---------------------------------------------------------------- tiny llama

def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF (out, in) rows → ggml's order, as llama.cpp's converter does:
    GGUF row h*d + 2i + a holds HF row h*d + a*(d/2) + i."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TINY = dict(vocab=64, hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, ctx=128, theta=10000.0, eps=1e-5)
TINY_TYPES = {  # per layer index: tensor → type
    0: {"attn_q": QT.Q8_0, "attn_k": QT.Q4_1, "attn_v": QT.BF16, "attn_output": QT.F32,
        "ffn_gate": QT.Q4_0, "ffn_up": QT.Q8_0, "ffn_down": QT.F16},
    1: {"attn_q": QT.Q4_1, "attn_k": QT.Q8_0, "attn_v": QT.Q4_0, "attn_output": QT.F16,
        "ffn_gate": QT.Q4_1, "ffn_up": QT.BF16, "ffn_down": QT.Q8_0},
}


def write_tiny_llama(path: str) -> None:
    c = TINY
    rng = np.random.default_rng(7)
    hd = c["hidden"] // c["heads"]
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("general.name", "tiny-llama-test")
    w.add_uint32("llama.block_count", c["layers"])
    w.add_uint32("llama.context_length", c["ctx"])
    w.add_uint32("llama.embedding_length", c["hidden"])
    w.add_uint32("llama.feed_forward_length", c["ffn"])
    w.add_uint32("llama.attention.head_count", c["heads"])
    w.add_uint32("llama.attention.head_count_kv", c["kv_heads"])
    w.add_float32("llama.rope.freq_base", c["theta"])
    w.add_float32("llama.attention.layer_norm_rms_epsilon", c["eps"])
    w.add_uint32("llama.rope.dimension_count", hd)
    # No llama.vocab_size: the vocabulary size is the length of the token list.
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(c["vocab"])])
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)

    def add(name, hf_values, qt):
        raw, _ = quantised(hf_values, qt)
        w.add_tensor(name, raw, raw_dtype=qt)

    def mat(out_f, in_f):
        return (rng.standard_normal((out_f, in_f)) * 0.1).astype(np.float32)

    add("token_embd.weight", mat(c["vocab"], c["hidden"]), QT.F16)
    for L in range(c["layers"]):
        t = TINY_TYPES[L]
        add(f"blk.{L}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(c["hidden"])).astype(np.float32), QT.F32)
        add(f"blk.{L}.attn_q.weight", permute(mat(c["hidden"], c["hidden"]), c["heads"]), t["attn_q"])
        add(f"blk.{L}.attn_k.weight", permute(mat(c["kv_heads"] * hd, c["hidden"]), c["kv_heads"]), t["attn_k"])
        add(f"blk.{L}.attn_v.weight", mat(c["kv_heads"] * hd, c["hidden"]), t["attn_v"])
        add(f"blk.{L}.attn_output.weight", mat(c["hidden"], c["hidden"]), t["attn_output"])
        add(f"blk.{L}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(c["hidden"])).astype(np.float32), QT.F32)
        add(f"blk.{L}.ffn_gate.weight", mat(c["ffn"], c["hidden"]), t["ffn_gate"])
        add(f"blk.{L}.ffn_up.weight", mat(c["ffn"], c["hidden"]), t["ffn_up"])
        add(f"blk.{L}.ffn_down.weight", mat(c["hidden"], c["ffn"]), t["ffn_down"])
    add("output_norm.weight", (1 + 0.1 * rng.standard_normal(c["hidden"])).astype(np.float32), QT.F32)
    add("output.weight", mat(c["vocab"], c["hidden"]), QT.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llama3_rope(path: str) -> None:
    """rope_freqs as convert_hf_to_gguf.py computes it for rope_type llama3."""
    import math
    import torch
    theta, dim, factor, low, high, old = 500000.0, 64, 32.0, 1.0, 4.0, 8192
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factors = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            factors.append(1)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    w = gguf.GGUFWriter(path, "llama")
    for key, val in [("block_count", 1), ("context_length", 131072), ("embedding_length", 128),
                     ("feed_forward_length", 256), ("attention.head_count", 2), ("attention.head_count_kv", 1),
                     ("rope.dimension_count", dim), ("vocab_size", 32)]:
        w.add_uint32("llama." + key, val)
    w.add_float32("llama.rope.freq_base", theta)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tensor("rope_freqs.weight", torch.tensor(factors, dtype=torch.float32).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- Transformers view

CONFIG_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
               "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"]


def transformers_view(path: str, tensor_names: list[str] | None) -> dict:
    """Config and tensor checks as Transformers' GGUF loader produces them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(path))
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    c = {k: getattr(cfg, k, None) for k in CONFIG_KEYS}
    rope = getattr(cfg, "rope_parameters", None) or {}
    c["rope_theta"] = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    c["rope_type"] = rope.get("rope_type", "default")
    names = tensor_names or sorted(sd)
    return {"config": c, "tensors": {n: checks(sd[n]) for n in names}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", help="path of SmolLM2-135M-Instruct.Q4_1.gguf")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    expected = {"v3": write_types(os.path.join(OUT, "types_v3.gguf"), 3, 32),
                "v2": write_types(os.path.join(OUT, "types_v2.gguf"), 2, 64)}
    with open(os.path.join(OUT, "types_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)

    tiny = os.path.join(OUT, "tiny_llama.gguf")
    write_tiny_llama(tiny)
    with open(os.path.join(OUT, "tiny_llama_expected.json"), "w") as f:
        json.dump(transformers_view(tiny, None), f, indent=1)

    write_llama3_rope(os.path.join(OUT, "llama3_rope.gguf"))

    if args.real:
        names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                 "model.layers.29.mlp.down_proj.weight", "model.layers.29.post_attention_layernorm.weight",
                 "model.norm.weight"]
        view = transformers_view(args.real, names)
        import hashlib
        with open(args.real, "rb") as f:
            view["sha256"] = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(OUT, "smollm2_expected.json"), "w") as f:
            json.dump(view, f, indent=1)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
