#!/usr/bin/env python3
"""Golden vectors for tune's optimizer: torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_ on random parameters and gradients.

Needs: torch (pip install torch).
Run from the repository root:
    python tools/reference/make_optimizer_golden.py
Writes tests/data/train/optimizer_golden.json.

Every number is a float32 value written with 9 significant digits, which
reads back to the same float32.
"""
import json
import os

import torch

OUT = os.path.join("tests", "data", "train", "optimizer_golden.json")

# Tensor sizes of one "model": flat, in the order tune walks them.
SHAPES = [(4, 8), (8, 4), (3,), (5, 6)]

# (lr, beta1, beta2, eps, weight_decay): Transformers' defaults, a large
# learning rate with weight decay, beta1 < 0.5 (torch's lerp takes its other
# branch), and no weight decay.
HYPER = [
    (1e-2, 0.9, 0.999, 1e-8, 0.01),
    (3e-4, 0.8, 0.99, 1e-6, 0.1),
    (1e-1, 0.5, 0.9, 1e-3, 0.0),
    (1e-3, 0.3, 0.95, 1e-8, 0.5),
]
STEPS = 5


def f32(x):
    return float(f"{x:.9g}")


def flat(tensors):
    return [f32(x) for t in tensors for x in t.detach().reshape(-1).tolist()]


def adamw_cases(gen):
    cases = []
    for lr, b1, b2, eps, wd in HYPER:
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
        opt = torch.optim.AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
        case = {"lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd,
                "init": flat(params), "steps": []}
        for step in range(STEPS):
            # Gradient scales from 1e-4 to 10 so tiny and large updates both appear.
            scale = 10.0 ** (step - 4 + (len(cases) % 2))
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen) * scale
            grads = flat([p.grad for p in params])
            opt.step()
            case["steps"].append({
                "grad": grads,
                "param": flat(params),
                "exp_avg": flat([opt.state[p]["exp_avg"] for p in params]),
                "exp_avg_sq": flat([opt.state[p]["exp_avg_sq"] for p in params]),
            })
        cases.append(case)
    return cases


def clip_cases(gen):
    cases = []
    for max_norm, scale in [(1.0, 1.0), (1.0, 1e-3), (0.25, 3.0), (5.0, 0.5)]:
        grads = [torch.randn(s, generator=gen) * scale for s in SHAPES]
        params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        before = flat(grads)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        cases.append({"max_norm": max_norm, "grad": before, "norm": f32(float(norm)),
                      "clipped": flat([p.grad for p in params])})
    return cases


def main():
    gen = torch.Generator().manual_seed(1234)
    golden = {
        "torch": torch.__version__,
        "shapes": [list(s) for s in SHAPES],
        "adamw": adamw_cases(gen),
        "clip": clip_cases(gen),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
