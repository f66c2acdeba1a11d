#!/usr/bin/env python3
"""The peer for `make bench`: LoRA training of Transformers + PEFT on this
machine, on the micro-batches tune trains on.

Needs: torch, transformers, peft, gguf, safetensors.

    tune preprocess bench.yml --batches batches.safetensors --steps 5
    python3 tools/bench/peer_lora_train.py MODEL batches.safetensors --threads 2

MODEL is a Hugging Face folder or a GGUF file (Transformers dequantises it to
fp32). The batches file (tune_train_write_batches) holds every micro-batch in
training order with its step: input_ids, labels (-100: not trained),
position_ids and segment_ids (packed examples 1, 2, ...; padding 0). Each
micro-batch gets a block-diagonal causal 4-D attention mask built from its
segments (inside the timed step, as a collator would), its position_ids and
its labels; the loss of a step is the summed
token loss of its micro-batches over the step's trained targets (the next
token's label is not -100 and lies in the same segment), as tune computes it.
The first `--warmup` steps are not timed. Then torch.matmul's rate with the
same threads: on 2048x2048x2048 (tune's sgemm ceiling is measured on that
product) and at the model's linear shapes.

Prints one JSON line: losses, step seconds, tokens_per_s (timed steps),
first_step_s (from process start to the end of the first step), FLOP counts,
matmul rates, peak_rss_mib.
"""
import argparse
import json
import os
import resource
import time


def process_seconds():
    """Seconds since this process started, as tune's elapsed_s counts them."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def load_batches(path, torch):
    from safetensors.torch import load_file

    t = load_file(path)
    steps = []
    for k, step in enumerate(t["step"].tolist()):
        if step == len(steps):
            steps.append([])
        seg = t[f"segment_ids.{k}"].long()
        labels = t[f"labels.{k}"].long()
        # tune's targets: logits[b, t] scored against labels[b, t + 1] in the same segment
        shift = torch.full_like(labels, -100)
        shift[:, :-1] = torch.where(seg[:, :-1] == seg[:, 1:], labels[:, 1:], -100)
        n_targets = int((shift != -100).sum())
        if n_targets != int(t["targets"][k]):
            raise SystemExit(f"micro-batch {k}: {n_targets} targets here, {int(t['targets'][k])} in the file")
        steps[-1].append({"input_ids": t[f"input_ids.{k}"].long(), "position_ids": t[f"position_ids.{k}"].long(),
                          "labels": labels, "shift_labels": shift, "segments": seg, "targets": n_targets})
    return steps


def packed_mask(seg, torch):
    """(B, 1, T, T) additive mask: a token sees the tokens before it in its own segment."""
    T = seg.shape[1]
    allowed = (seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    return torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)[:, None]


def matmul_gflops(torch, shapes, reps=3):
    """torch.matmul's rate over products (M, K) x (K, N): their FLOPs over the best time of each."""
    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.matmul(a, b)  # warms up
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        flops += 2.0 * m * k * n
        seconds += best
    return flops / seconds / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batches")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--lora_alpha", type=float, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max_grad_norm", type=float, default=1.0)
    ap.add_argument("--sgemm_n", type=int, default=2048)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    steps = load_batches(args.batches, torch)
    if len(steps) <= args.warmup:
        raise SystemExit(f"{args.batches} has {len(steps)} steps; --warmup {args.warmup} leaves none to time")
    if args.model.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(args.model))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # tune's defaults: weight_decay 0, betas (0.9, 0.999), eps 1e-8, max_grad_norm 1
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)

    losses, seconds, tokens, first_step_s = [], [], [], None
    for s, mbs in enumerate(steps):
        t0 = time.perf_counter()
        n_targets = sum(mb["targets"] for mb in mbs)
        loss = 0.0
        for mb in mbs:
            out = model(input_ids=mb["input_ids"], attention_mask=packed_mask(mb["segments"], torch),
                        position_ids=mb["position_ids"], labels=mb["labels"], shift_labels=mb["shift_labels"],
                        num_items_in_batch=n_targets)
            out.loss.backward()
            loss += out.loss.item()
        torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - t0)
        losses.append(loss)
        tokens.append(sum(mb["input_ids"].numel() for mb in mbs))
        if s == 0:
            first_step_s = process_seconds()
    timed_tokens, timed_s = sum(tokens[args.warmup:]), sum(seconds[args.warmup:])

    cfg = model.config
    linears = [m.base_layer for m in model.modules() if hasattr(m, "base_layer")]
    frozen = sum(m.in_features * m.out_features for m in linears) + cfg.vocab_size * cfg.hidden_size
    lora_params = sum(p.numel() for p in trainable)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    T = steps[0][0]["input_ids"].shape[1]
    flops_per_token = 4 * frozen + 6 * lora_params + 6 * cfg.num_hidden_layers * T * cfg.num_attention_heads * head_dim
    M = steps[0][0]["input_ids"].numel()
    shapes = sorted({(M, m.in_features, m.out_features) for m in linears}) + [(M, cfg.hidden_size, cfg.vocab_size)]
    n = args.sgemm_n
    print(json.dumps({
        "peer": "transformers+peft", "torch": torch.__version__, "threads": args.threads,
        "attn_implementation": cfg._attn_implementation, "steps": len(steps), "warmup": args.warmup,
        "losses": losses, "step_seconds": seconds, "tokens_per_step": tokens,
        "tokens_per_s": timed_tokens / timed_s, "first_step_s": first_step_s,
        "frozen_params": frozen, "lora_params": lora_params, "model_flops_per_token": flops_per_token,
        "matmul_gflops": matmul_gflops(torch, [(n, n, n)]), "matmul_n": n,
        "matmul_model_shapes_gflops": matmul_gflops(torch, shapes), "matmul_model_shapes": shapes,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
