#!/usr/bin/env python3
"""A tiny LLaMA in llama.cpp's quantised GGUF types, with Transformers goldens.

Needs: pip install torch transformers gguf numpy tokenizers; and llama.cpp's
llama-quantize (tools/bench/llamacpp.sh builds it).

Run from the repository root:

    python tools/reference/make_quant_model_golden.py LLAMA_QUANTIZE [--llama-simple LLAMA_SIMPLE]
        [--keep-f32 PATH]

e.g. LLAMA_QUANTIZE = $HOME/.cache/tune-llamacpp/bin/llama-quantize. The script
deletes and rewrites tests/data/quant_models/ (about 10 s):

1. A random LlamaForCausalLM (config below: hidden 256, intermediate 256,
   2 layers, 4 heads of 64, 2 KV heads, tied embeddings as in SmolLM2, vocab
   384) with the tiny byte-level BPE tokenizer of tests/data/tiny/tokenizer.
   Weights from a seeded generator: linear N(0, 0.08), embeddings N(0, 0.1),
   RMSNorm weights 1 + N(0, 0.1), so greedy decoding wanders over the
   vocabulary instead of repeating one token. SEED is the first of 1..30
   whose smallest greedy margin over all files and prompts is >= 0.01; the
   script fails when a margin falls below MIN_MARGIN (a near tie that another
   machine's rounding could flip). Every row length is 256, so K-quants apply
   to every matrix (no fallback types, unlike SmolLM2's rows of 576).
2. It is written as an F32 GGUF the way llama.cpp's convert_hf_to_gguf.py lays
   one out: its metadata keys, tensors in the sorted order of the Hugging Face
   names, q/k rows permuted for ggml's RoPE, no output.weight (tied),
   tokenizer.ggml.* from the tokenizer (model "gpt2", pre "smollm" as in
   SmolLM2; the ChatML template). Transformers must load it back to the
   original model's logits (checked). The F32 file (3.6 MB) is not committed;
   --keep-f32 PATH keeps a copy.
3. llama-quantize (one thread) makes each file of QUANTS from it. Files and
   the ggml types of their matrices (the norms stay F32; token_embd is also
   the output projection):
     tiny.Q4_K_M.gguf     Q4_K; Q6_K for token_embd, blk.1.attn_v, blk.1.ffn_down
     tiny.Q5_K_M.gguf     Q5_K; Q6_K for the same three
     tiny.Q2_K.gguf       Q2_K (attn_q/k, ffn_gate/up); Q3_K (attn_v, attn_output,
                          ffn_down); Q6_K token_embd
     tiny.Q8_0.gguf       Q8_0 throughout
     tiny.Q5_0.pure.gguf  Q5_0 throughout (--pure: token_embd too)
     tiny.Q5_1.pure.gguf  Q5_1 throughout (--pure)
   so each block type Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and Q8_0 is a
   linear weight of at least one file, 3.7 MiB in all. Separate Q6_K and
   Q3_K_M files would add 1.2 MB for types already covered.
4. For each file Transformers (AutoModelForCausalLM.from_pretrained with
   gguf_file=, which dequantises every tensor to fp32 with gguf-py; eager
   attention, fp32, one thread) gives the goldens below for two fixed prompts.

tests/data/quant_models/expected.json:
  config       the model's shape (as Transformers reads the GGUF)
  prompts      [{name, text, ids}]: the ids are the input (text is what the
               tokenizer encodes to them, without special-token addition)
  files        {file name: {quant, pure, bytes, sha256, type_counts
               {ggml type: tensors}, tensor_types {GGUF tensor name: type},
               prompts {name: {...}}}}, per prompt:
     greedy_ids          16 new tokens: model.generate(do_sample=False,
                         use_cache=True), EOS not stopping (eos_positions
                         lists where <|im_end|> (2) occurs, if at all)
     greedy_text         their decoding (special tokens kept)
     last_logits_first16 float32 logits of the last prompt position, first 16
     last_argmax         argmax of that row
     last_logits_max, last_logsumexp
     min_greedy_margin   smallest top-1 minus top-2 logit over the 16 greedy
                         steps (a bound for how far a reader may differ
                         before a greedy token changes)
     f32_max_abs_diff    largest |logit| difference of the last row against
                         the unquantised model (how much the quantisation moved
                         it; near 0 would mean the types were not exercised)
  f32          the same goldens for the unquantised model (not committed)
  versions, llama_quantize (its --version line)

Checks before writing: Transformers' F32 logits equal the original model's
(1e-5), the greedy ids equal the argmaxes of one forward over prompt +
continuation, each file holds the ggml types it is meant to, and files differ
from F32 by a clear amount. With --llama-simple, llama.cpp's greedy text for
each prompt is printed next to Transformers' (information only: llama.cpp
multiplies with 8-bit-quantised activations and may part after a few tokens).
A rerun writes identical goldens on the same machine (seeded, one thread).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

import gguf

OUT = os.path.join("tests", "data", "quant_models")
TOKENIZER = os.path.join("tests", "data", "tiny", "tokenizer")
STEM = "tiny"

CONFIG = dict(vocab_size=384, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=128,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
              bos_token_id=1, eos_token_id=2, pad_token_id=2)

# (file suffix, llama-quantize type, --pure, ggml types that must occur as matrices)
QUANTS = [
    ("Q4_K_M", "Q4_K_M", False, {"Q4_K", "Q6_K"}),
    ("Q5_K_M", "Q5_K_M", False, {"Q5_K", "Q6_K"}),
    ("Q2_K", "Q2_K", False, {"Q2_K", "Q3_K", "Q6_K"}),
    ("Q8_0", "Q8_0", False, {"Q8_0"}),
    ("Q5_0.pure", "Q5_0", True, {"Q5_0"}),
    ("Q5_1.pure", "Q5_1", True, {"Q5_1"}),
]

PROMPTS = [
    ("chat", "<|im_start|>user\nWhich formula adds the cells of a column?<|im_end|>\n<|im_start|>assistant\n"),
    ("plain", "The sheet has a total row and the answer is"),
]
N_NEW = 16
EMBED_STD = 0.1
LINEAR_STD = 0.08
SEED = 11  # the first seed of 1..30 whose greedy margins are all >= 0.01 (see MIN_MARGIN)
MIN_MARGIN = 0.005


# ---------------------------------------------------------------- model

def make_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**CONFIG, attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # named_parameters order is fixed
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=g))
            else:
                p.copy_(LINEAR_STD * torch.randn(p.shape, generator=g))
    model.eval()
    return model


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF (out, in) rows -> ggml's RoPE order, as convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "blk.{}.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "blk.{}.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", "blk.{}.attn_q.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", "blk.{}.attn_k.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", "blk.{}.attn_v.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "blk.{}.attn_output.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "blk.{}.ffn_gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "blk.{}.ffn_up.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "blk.{}.ffn_down.weight"),
]


def gguf_name(hf: str) -> str:
    for pat, out in GGUF_NAMES:
        m = re.fullmatch(pat, hf)
        if m:
            return out.format(*m.groups())
    raise KeyError(hf)


def tokenizer_fields():
    """tokens, token types and merges of the tiny tokenizer, as the converter writes them."""
    doc = json.load(open(os.path.join(TOKENIZER, "tokenizer.json"), encoding="utf-8"))
    cfg = json.load(open(os.path.join(TOKENIZER, "tokenizer_config.json"), encoding="utf-8"))
    vocab = doc["model"]["vocab"]
    n = 1 + max(max(vocab.values()), max(a["id"] for a in doc["added_tokens"]))
    assert n == CONFIG["vocab_size"], n
    tokens, types = [""] * n, [1] * n
    for t, i in vocab.items():
        tokens[i] = t
    for a in doc["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    return tokens, types, merges, cfg.get("chat_template")


def write_f32_gguf(model, path: str) -> None:
    c = CONFIG
    w = gguf.GGUFWriter(path, "llama")
    # Keys in the order convert_hf_to_gguf.py writes them for a LlamaForCausalLM.
    w.add_type("model")
    w.add_name("Tiny Quant Test")
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(c["vocab_size"])
    w.add_rope_dimension_count(c["head_dim"])
    tokens, types, merges, template = tokenizer_fields()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(c["bos_token_id"])
    w.add_eos_token_id(c["eos_token_id"])
    w.add_unk_token_id(0)
    w.add_pad_token_id(c["pad_token_id"])
    w.add_add_bos_token(False)
    if template:
        w.add_chat_template(template)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    sd = model.state_dict()
    for hf in sorted(sd):  # the converter walks the safetensors names in sorted order
        if hf == "lm_head.weight" and c["tie_word_embeddings"]:
            continue  # tied: not in the checkpoint, no output.weight in the GGUF
        t = sd[hf].detach().float().numpy()
        if hf.endswith("q_proj.weight"):
            t = permute(t, c["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            t = permute(t, c["num_key_value_heads"])
        w.add_tensor(gguf_name(hf), np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- goldens

def load_gguf(path: str):
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(path))
    m = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                             attn_implementation="eager")
    m.eval()
    return m


def logits_of(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def goldens(model, prompt_ids: list[int], tok) -> dict:
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        # An explicit mask: generate would otherwise mask every prompt token equal
        # to pad_token_id (<|im_end|>, in the chat prompt).
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False, use_cache=True,
                             eos_token_id=None, pad_token_id=CONFIG["pad_token_id"], output_logits=True,
                             return_dict_in_generate=True, top_k=None, top_p=None, temperature=None)
    new = out.sequences[0, len(prompt_ids):].tolist()
    assert len(new) == N_NEW
    step_logits = torch.stack([x[0].float() for x in out.logits])  # (16, V), raw
    # The same tokens from one forward over prompt + continuation.
    full = logits_of(model, prompt_ids + new)
    n = len(prompt_ids)
    assert full[n - 1:n - 1 + N_NEW].argmax(-1).tolist() == new, "generate disagrees with the full forward"
    assert torch.allclose(full[n - 1:n - 1 + N_NEW], step_logits, atol=1e-4), "cached steps differ"
    top2 = step_logits.topk(2, dim=-1).values
    last = full[n - 1]
    return {
        "greedy_ids": new,
        "greedy_text": tok.decode(new, skip_special_tokens=False),
        "eos_positions": [i for i, t in enumerate(new) if t == CONFIG["eos_token_id"]],
        "last_logits_first16": [float(np.float32(x)) for x in last[:16].tolist()],
        "last_argmax": int(last.argmax()),
        "last_logits_max": float(last.max()),
        "last_logsumexp": float(torch.logsumexp(last.double(), 0)),
        "min_greedy_margin": float((top2[:, 0] - top2[:, 1]).min()),
        "_last": last,
    }


def file_types(path: str) -> tuple[dict, dict]:
    r = gguf.GGUFReader(path)
    per = {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in r.tensors}
    counts: dict = {}
    for v in per.values():
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items())), per


def run_llama_simple(binary: str, path: str, text: str) -> str:
    p = subprocess.run([binary, "-m", path, "-n", str(N_NEW), text], capture_output=True, text=True,
                       errors="backslashreplace", timeout=300)
    if p.returncode != 0:
        return f"<failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}>"
    out = p.stdout.rstrip("\n")
    return out[len(text):] if out.startswith(text) else out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("llama_quantize")
    ap.add_argument("--llama-simple", dest="llama_simple")
    ap.add_argument("--keep-f32", dest="keep_f32")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    import transformers
    from tokenizers import Tokenizer, pre_tokenizers

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tok = Tokenizer.from_file(os.path.join(TOKENIZER, "tokenizer.json"))
    # The GGUF says pre "smollm": digits split one by one before the GPT-2 regex
    # (llama.cpp, tune). The prompts have no digits, so both tokenizations agree.
    tok_smollm = Tokenizer.from_file(os.path.join(TOKENIZER, "tokenizer.json"))
    tok_smollm.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                        pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                 use_regex=True)])
    prompts = []
    for name, text in PROMPTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == tok_smollm.encode(text, add_special_tokens=False).ids, name
        assert tok.decode(ids, skip_special_tokens=False) == text, name
        prompts.append({"name": name, "text": text, "ids": ids})

    # llama-quantize has no --version: the first line of build-info.txt that
    # tools/bench/llamacpp.sh writes beside bin/ names the source, when present.
    info = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.llama_quantize))), "build-info.txt")
    qversion = open(info).readline().strip() if os.path.exists(info) else "unknown"

    model = make_model(args.seed)
    tmp = tempfile.mkdtemp(prefix="quant-golden-")
    try:
        f32 = os.path.join(tmp, f"{STEM}.F32.gguf")
        write_f32_gguf(model, f32)
        if args.keep_f32:
            shutil.copy(f32, args.keep_f32)
        ref = load_gguf(f32)
        for p in prompts:  # the GGUF layout (permutation, names, config) round-trips
            d = (logits_of(ref, p["ids"]) - logits_of(model, p["ids"])).abs().max().item()
            assert d < 1e-5, f"F32 GGUF differs from the model: {d}"
        cfg = ref.config
        config = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                               "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                               "head_dim", "max_position_embeddings", "rms_norm_eps",
                                               "tie_word_embeddings", "bos_token_id", "eos_token_id")}
        rope = getattr(cfg, "rope_parameters", None) or {}
        config["rope_theta"] = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
        f32_gold = {p["name"]: goldens(ref, p["ids"], tok) for p in prompts}

        if os.path.isdir(OUT):
            shutil.rmtree(OUT)
        os.makedirs(OUT)
        files = {}
        for suffix, qtype, pure, must in QUANTS:
            name = f"{STEM}.{suffix}.gguf"
            path = os.path.join(OUT, name)
            cmd = [args.llama_quantize] + (["--pure"] if pure else []) + [f32, path, qtype, "1"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(p.stdout[-2000:], p.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"llama-quantize {qtype} failed")
            counts, per = file_types(path)
            matrices = {v for k, v in per.items() if not k.endswith("norm.weight")}
            assert must <= matrices, f"{name}: {sorted(matrices)} lacks {sorted(must - matrices)}"
            qm = load_gguf(path)
            entry = {"quant": qtype, "pure": pure, "bytes": os.path.getsize(path),
                     "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
                     "type_counts": counts, "tensor_types": per, "prompts": {}}
            for pr in prompts:
                g = goldens(qm, pr["ids"], tok)
                g["f32_max_abs_diff"] = float((g.pop("_last") - f32_gold[pr["name"]]["_last"]).abs().max())
                assert g["f32_max_abs_diff"] > 1e-3, f"{name}: no quantisation effect?"
                if args.llama_simple:
                    g_text = run_llama_simple(args.llama_simple, path, pr["text"])
                    print(f"  {name} {pr['name']}: llama.cpp {g_text!r}", file=sys.stderr)
                assert g["min_greedy_margin"] >= MIN_MARGIN, f"{name} {pr['name']}: a near tie, try another --seed"
                entry["prompts"][pr["name"]] = g
            files[name] = entry
            print(f"{name}: {entry['bytes']} bytes, {counts}; greedy "
                  + " | ".join(repr(entry['prompts'][pr['name']]['greedy_text']) for pr in prompts), file=sys.stderr)
        for g in f32_gold.values():
            g.pop("_last")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    total = sum(f["bytes"] for f in files.values())
    import tokenizers
    doc = {
        "config": config,
        "prompts": prompts,
        "n_new_tokens": N_NEW,
        "files": files,
        "f32": {"prompts": f32_gold},
        "total_bytes": total,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "llama_quantize": qversion,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(files)} files, {total} bytes", file=sys.stderr)
    return 0


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
