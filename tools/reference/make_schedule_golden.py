#!/usr/bin/env python3
"""Golden learning rates for tune_schedule_lr (tests/test_plan.c).

Needs: torch, transformers (pip install torch transformers).
Run from the project root:  python tools/reference/make_schedule_golden.py
Writes tests/data/plan/schedules.json: for each case (kind, warmup, total,
min_lr_ratio, lr) the learning rate Transformers' scheduler gives the
optimizer at every step 0..total.
"""
import json
import os

import torch
from transformers import (get_constant_schedule,
                          get_constant_schedule_with_warmup,
                          get_cosine_schedule_with_warmup,
                          get_cosine_with_min_lr_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

CASES = [
    # kind, warmup, total, min_lr_ratio, lr
    ("constant", 0, 10, 0.0, 1e-3),
    ("constant", 4, 10, 0.0, 1e-3),  # get_constant_schedule ignores warmup
    ("constant_with_warmup", 3, 12, 0.0, 5e-5),
    ("constant_with_warmup", 0, 5, 0.0, 5e-5),
    ("linear", 0, 10, 0.0, 2e-4),
    ("linear", 5, 20, 0.0, 2e-4),
    ("linear", 10, 10, 0.0, 1e-4),
    ("cosine", 0, 10, 0.0, 2e-4),
    ("cosine", 7, 137, 0.0, 2e-4),
    ("cosine", 1, 1, 0.0, 3e-4),
    ("cosine", 5, 50, 0.1, 2e-4),
    ("cosine", 0, 33, 0.25, 1e-3),
]


def lrs(kind, warmup, total, min_ratio, lr):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    if kind == "constant":
        sched = get_constant_schedule(opt)
    elif kind == "constant_with_warmup":
        sched = get_constant_schedule_with_warmup(opt, warmup)
    elif kind == "linear":
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
    elif min_ratio > 0:
        sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=min_ratio)
    else:
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    cases = [dict(kind=k, warmup=w, total=t, min_lr_ratio=m, lr=lr, lrs=lrs(k, w, t, m, lr))
             for k, w, t, m, lr in CASES]
    path = os.path.join("tests", "data", "plan", "schedules.json")
    with open(path, "w") as f:
        json.dump({"cases": cases}, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
