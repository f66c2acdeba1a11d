#!/usr/bin/env python3
"""Compare two tune output folders: per-step loss and every adapter tensor.

usage: compare_runs.py NAME DIR_A DIR_B [--tol 1e-4]

Loss: the "loss" of each step in training_log.jsonl (the last line of a step
wins, so a resumed log compares too); max relative difference |a-b| / |a|.
Adapter: every tensor of adapter_model.safetensors, max |a-b| / max |a|.
Prints one table and a last line "NAME: PASS|FAIL loss=.. adapter=..";
exits 1 when a figure is above the tolerance or something is missing.
Needs only the Python standard library (numpy is used when present).
"""
import argparse
import array
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # the standard library suffices, only slower
    np = None


def read_log(path):
    steps = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if "step" in row and "loss" in row:
                steps[int(row["step"])] = float(row["loss"])
    return steps


def read_safetensors(path):
    """name -> list/array of floats (F32, F16 and BF16 only)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw = data[lo:hi]
        dt = info["dtype"]
        if np is not None:
            if dt == "F32":
                v = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            elif dt == "F16":
                v = np.frombuffer(raw, dtype="<f2").astype(np.float64)
            elif dt == "BF16":
                v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            else:
                raise SystemExit(f"{path}: {name}: dtype {dt} not handled")
        else:
            if dt == "F32":
                v = array.array("f")
                v.frombytes(raw)
                if sys.byteorder != "little":
                    v.byteswap()
            elif dt in ("F16", "BF16"):
                h = array.array("H")
                h.frombytes(raw)
                if dt == "F16":
                    v = [struct.unpack("<e", struct.pack("<H", x))[0] for x in h]
                else:
                    v = [struct.unpack("<f", struct.pack("<I", x << 16))[0] for x in h]
            else:
                raise SystemExit(f"{path}: {name}: dtype {dt} not handled")
        out[name] = (tuple(info["shape"]), v)
    return out


def tensor_rel(a, b):
    """max |a-b| / max |a| (0 when both are all zero)."""
    if np is not None:
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
    else:
        diff = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
        scale = max((abs(x) for x in a), default=0.0)
    if diff != diff:  # NaN
        return float("inf")
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    problems = []

    la = read_log(os.path.join(args.a, "training_log.jsonl"))
    lb = read_log(os.path.join(args.b, "training_log.jsonl"))
    print(f"== {args.name}: {args.a} vs {args.b}")
    print(f"{'step':>5} {'loss A':>14} {'loss B':>14} {'rel diff':>10}")
    loss_max = 0.0
    if not la or sorted(la) != sorted(lb):
        problems.append(f"logged steps differ: {len(la)} vs {len(lb)}")
    for step in sorted(set(la) & set(lb)):
        a, b = la[step], lb[step]
        rel = abs(a - b) / abs(a) if a != 0 else abs(b)
        if rel != rel:
            rel = float("inf")
        loss_max = max(loss_max, rel)
        print(f"{step:>5} {a:>14.8f} {b:>14.8f} {rel:>10.2e}")

    ta = read_safetensors(os.path.join(args.a, "adapter_model.safetensors"))
    tb = read_safetensors(os.path.join(args.b, "adapter_model.safetensors"))
    if sorted(ta) != sorted(tb):
        problems.append("adapter tensor names differ")
    print(f"{'tensor':<60} {'shape':>14} {'max|a-b|/max|a|':>16}")
    ad_max, worst = 0.0, ""
    for name in sorted(set(ta) & set(tb)):
        (sa, a), (sb, b) = ta[name], tb[name]
        if sa != sb:
            problems.append(f"{name}: shape {sa} vs {sb}")
            continue
        rel = tensor_rel(a, b)
        if rel >= ad_max:
            ad_max, worst = rel, name
        print(f"{name:<60} {'x'.join(map(str, sa)):>14} {rel:>16.2e}")
    if loss_max > args.tol:
        problems.append(f"loss rel diff {loss_max:.2e} > {args.tol:g}")
    if ad_max > args.tol:
        problems.append(f"adapter rel diff {ad_max:.2e} > {args.tol:g} ({worst})")
    verdict = "FAIL" if problems else "PASS"
    print(f"{args.name}: {verdict} loss={loss_max:.2e} adapter={ad_max:.2e} "
          f"steps={len(la)} tensors={len(ta)}" + ("  [" + "; ".join(problems) + "]" if problems else ""))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
