#!/usr/bin/env python3
"""The peer for tools/gpu/check.sh: LoRA training with Transformers + PEFT on
the GPU, fp32 with TF32 off, on B x T token batches, timed like tune.

usage: peer_peft_train.py MODEL_DIR --batch B --seq T [--steps 30] [--lr 1e-4]

One warm-up step, then STEPS timed steps (torch.cuda.synchronize around the
clock). Batches are random token ids below min(vocab, 49152) with labels =
ids (the same amount of work per token as real text). Prints one JSON line:
tokens_per_s, step_s, max_memory_allocated_mib, lora_params, loss_first/last.
"""
import argparse
import json
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        torch.set_float32_matmul_precision("highest")
    except Exception:
        pass
    torch.manual_seed(args.seed)
    dev = torch.device("cuda")

    kw = dict(attn_implementation="sdpa")
    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32, **kw)
    except TypeError:
        model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, **kw)
    model.config.use_cache = False
    model.to(dev)
    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                     "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    vocab = min(model.config.vocab_size, 49152)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    batches = [torch.randint(0, vocab, (args.batch, args.seq), generator=g)
               for _ in range(args.steps + 1)]

    def step(ids):
        ids = ids.to(dev, non_blocking=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    torch.cuda.reset_peak_memory_stats()
    loss_first = float(step(batches[0]))  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = None
    for ids in batches[1:]:
        loss = step(ids)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = args.steps * args.batch * args.seq
    print(json.dumps({
        "tokens_per_s": tokens / dt,
        "step_s": dt / args.steps,
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "lora_params": lora_params,
        "loss_first": loss_first,
        "loss_last": float(loss),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0),
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
