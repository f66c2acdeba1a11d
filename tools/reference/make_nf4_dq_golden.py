#!/usr/bin/env python3
"""Golden files for tune's NF4 with double quantisation (NF4_DQ,
bnb_4bit_use_double_quant; tests/test_quant.c), made by bitsandbytes itself
on the CPU.

Needs: pip install bitsandbytes torch numpy
       (made with bitsandbytes 0.50.2, torch 2.15 CPU, numpy 2.4)

Run from the repository root:
    python tools/reference/make_nf4_dq_golden.py

bitsandbytes.functional.quantize_4bit(x, blocksize=64, quant_type="nf4",
compress_statistics=True) quantises x as NF4 (the 4-bit codes are those of
plain NF4, made with each block's fp32 absmax), then the absmax values
themselves: offset = absmax.mean() (float32), and quantize_blockwise(absmax
- offset, blocksize=256) with the signed 8-bit dynamic map
(create_dynamic_map()): per 256 blocks an fp32 absmax2, per block a uint8.
dequantize_4bit undoes it: absmax = code2[q] * absmax2 (float32), then
+= offset (float32), then NF4 value * absmax.

The CPU library (csrc/cpu_ops.cpp, 0.50) does not pick the nearest code: it
maps v = (absmax - offset) * (1 / absmax2) to step k = (uint16)((v + 1) *
0.5 * 65535 + 0.5) of a 65536-entry table whose entry k is the number of
midpoints 0.5 * (code2[i] + code2[i+1]) below -1 + 2k / 65535 (all float32);
a group whose absmax2 is 0 gets code 0. This script checks that rule
against the library on the golden and on 1.1 million other values.

The offset: PyTorch's float32 mean is summed in an order that follows the
CPU's vector width and can differ in its last bit from the mean summed in
double and rounded once (tune's). The input is chosen (the first seed from
20260301 on) so that the two agree, and the script checks it, so tune's
quantiser must give these bytes exactly.

Writes into tests/data/quant/ (deterministic):
  nf4dq_in.f32       (88, 192) float32: 264 blocks of 64, three a row, so
                     the groups of 256 blocks span rows (block 256 is row
                     85's second) and the last group holds 8. Normal values
                     at weight scale, with block 10 all zero (absmax 0) and
                     block 100 at 40 times the scale (the first group's
                     largest |absmax - offset|: its q is 255)
  nf4dq_codes.bin    the packed 4-bit codes (two a byte, first value in the
                     high nibble), 8448 bytes
  nf4dq_qabsmax.bin  QuantState.absmax: one uint8 per block (264)
  nf4dq_stats.f32    QuantState.offset, then state2.absmax (2): float32
  nf4dq_code.f32     state2.code: the dynamic map (256 float32)
  nf4dq_dequant.f32  dequantize_4bit of the above, float32 (88, 192)
"""
import os

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

OUT = os.path.join("tests", "data", "quant")
ROWS, COLS, BLOCK = 88, 192, 64
f32 = np.float32


def make_input(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(f32)
    b = x.reshape(-1, BLOCK)
    b[10] = 0.0
    b[100] *= f32(40.0)
    return x


def lut_rule(v: np.ndarray, code: np.ndarray) -> np.ndarray:
    """bitsandbytes' CPU quantize_blockwise code of normalised values v."""
    mid = (f32(0.5) * (code[:-1] + code[1:]).astype(f32)).astype(f32)
    k = np.arange(65536)
    grid = (f32(-1.0) + ((f32(2.0) * k.astype(f32)).astype(f32) / f32(65535)).astype(f32)).astype(f32)
    lut = np.searchsorted(mid, grid, side="left")  # midpoints strictly below
    v = np.clip(v.astype(f32), f32(-1), f32(1))
    t = (((v + f32(1)) * f32(0.5)).astype(f32) * f32(65535)).astype(f32)
    return lut[(t + f32(0.5)).astype(f32).astype(np.int64)].astype(np.uint8)


def blockwise_by_rule(a: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_blockwise(a, blocksize=256) by the rule above."""
    n = a.size
    groups = -(-n // 256)
    absmax2 = np.array([np.abs(a[256 * g:256 * g + 256]).max() for g in range(groups)], dtype=f32)
    inv = np.where(absmax2 != 0, f32(1) / np.where(absmax2 != 0, absmax2, f32(1)), f32(0)).astype(f32)
    v = (a * np.repeat(inv, 256)[:n]).astype(f32)
    q = lut_rule(v, code)
    q[np.repeat(absmax2 == 0, 256)[:n]] = 0
    return q, absmax2


def library_blockwise(v: np.ndarray, code: np.ndarray) -> np.ndarray:
    """The library's codes of values v in [-1, 1]: each group of 255 led by 1.0 (absmax 1)."""
    n = v.size
    pad = (-n) % 255
    g = np.concatenate([v, np.zeros(pad, f32)]).reshape(-1, 255)
    g = np.concatenate([np.ones((g.shape[0], 1), f32), g], axis=1).reshape(-1)
    out, _ = torch.ops.bitsandbytes.quantize_blockwise(torch.from_numpy(g), torch.from_numpy(code.copy()), 256)
    return out.numpy().reshape(-1, 256)[:, 1:].reshape(-1)[:n]


def check_rule(code: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    k = np.arange(65535).astype(f32)
    steps = (f32(2) * (k + f32(0.5)) / f32(65535) - f32(1)).astype(f32)  # where the step rounds
    v = np.concatenate([rng.uniform(-1, 1, 1_000_000).astype(f32), steps, np.nextafter(steps, f32(2)),
                        np.nextafter(steps, f32(-2)), code, np.array([-1.0, 1.0, 0.0], f32)])
    assert np.array_equal(library_blockwise(v, code), lut_rule(v, code)), "the lookup-table rule differs"


def main() -> None:
    torch.manual_seed(0)
    code = F.create_dynamic_map(signed=True).numpy().astype(f32)
    check_rule(code)
    for seed in range(20260301, 20260301 + 100):
        x = make_input(seed)
        absmax = np.abs(x.reshape(-1, BLOCK)).max(axis=1).astype(f32)
        if f32(torch.from_numpy(absmax).mean().item()) == f32(absmax.astype(np.float64).sum() / absmax.size):
            break
    else:
        raise SystemExit("no seed whose float32 mean is the correctly rounded one")

    packed, state = F.quantize_4bit(torch.from_numpy(x.copy()), blocksize=BLOCK, quant_type="nf4",
                                    compress_statistics=True)
    assert state.nested and state.blocksize == BLOCK and state.state2.blocksize == 256
    plain, plain_state = F.quantize_4bit(torch.from_numpy(x.copy()), blocksize=BLOCK, quant_type="nf4")
    assert torch.equal(packed, plain), "the 4-bit codes are plain NF4's"
    assert np.array_equal(plain_state.absmax.numpy().view(np.uint32), absmax.view(np.uint32))

    codes_bytes = packed.numpy().reshape(-1).copy()
    qabsmax = state.absmax.numpy().astype(np.uint8).copy()
    offset = f32(state.offset.item())
    absmax2 = state.state2.absmax.numpy().astype(f32).copy()
    code2 = state.state2.code.numpy().astype(f32).copy()
    assert np.array_equal(code2.view(np.uint32), code.view(np.uint32)), "state2.code is create_dynamic_map()"
    assert qabsmax.size == ROWS * COLS // BLOCK == 264 and absmax2.size == 2

    # The quantisation of the absmax values, by the rule written out.
    assert offset == f32(absmax.astype(np.float64).sum() / absmax.size)
    want_q, want_absmax2 = blockwise_by_rule((absmax - offset).astype(f32), code)
    assert np.array_equal(want_absmax2.view(np.uint32), absmax2.view(np.uint32)), "absmax2"
    assert np.array_equal(want_q, qabsmax), "q differs from the lookup-table rule"
    assert absmax[10] == 0 and qabsmax[100] == 255

    # Dequantisation by hand: two roundings for the absmax, one for the value.
    deq = F.dequantize_4bit(packed, state).numpy().astype(f32).copy()
    am = ((code2[qabsmax] * np.repeat(absmax2, 256)[:qabsmax.size]).astype(f32) + offset).astype(f32)
    nf4 = F.get_4bit_type("nf4", device="cpu").numpy().astype(f32)
    c = np.empty(codes_bytes.size * 2, dtype=np.uint8)
    c[0::2], c[1::2] = codes_bytes >> 4, codes_bytes & 15
    by_hand = (nf4[c].reshape(-1, BLOCK) * am[:, None]).astype(f32).reshape(ROWS, COLS)
    assert np.array_equal(by_hand.view(np.uint32), deq.view(np.uint32)), "dequantisation differs"

    def write(name: str, data: np.ndarray) -> None:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(np.ascontiguousarray(data).tobytes())

    os.makedirs(OUT, exist_ok=True)
    write("nf4dq_in.f32", x.astype("<f4"))
    write("nf4dq_codes.bin", codes_bytes)
    write("nf4dq_qabsmax.bin", qabsmax)
    write("nf4dq_stats.f32", np.concatenate([[offset], absmax2]).astype("<f4"))
    write("nf4dq_code.f32", code2.astype("<f4"))
    write("nf4dq_dequant.f32", deq.astype("<f4"))
    print("bitsandbytes", bitsandbytes.__version__, "torch", torch.__version__, "seed", seed, "wrote", OUT)


if __name__ == "__main__":
    main()
