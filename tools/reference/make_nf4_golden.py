#!/usr/bin/env python3
"""Golden files for tune's NF4 quantiser and dequantiser (tests/test_quant.c),
made by bitsandbytes itself on the CPU.

Needs: pip install bitsandbytes torch numpy
       (made with bitsandbytes 0.50.2, torch 2.15 CPU, numpy 2.4; bitsandbytes
       runs quantize_4bit / dequantize_4bit on CPU tensors since 0.45)

Run from the repository root:
    python tools/reference/make_nf4_golden.py

Writes into tests/data/quant/ (deterministic: a fixed seed, a rerun writes
the same bytes):
  nf4_in.f32       (4, 256) float32, raw little-endian, row-major: 16 blocks
                   of 64 values. Normal values at several scales, and
                   - row 1, block 2: all zero (absmax 0: every code is 7, 0.0)
                   - row 2, block 1: both +absmax and -absmax occur (codes 15
                     and 0), absmax a power of two times 1.5
                   - row 3, block 3: absmax exactly 1 (x / absmax = x), and
                     every decision point between neighbouring code values
                     (the fp32 midpoint bitsandbytes bucketizes with), the
                     float just below it and the float just above it, so
                     the tie rule (a value on a midpoint takes the lower
                     code) is pinned down
  nf4_codes.bin    bitsandbytes.functional.quantize_4bit(in, blocksize=64,
                   quant_type="nf4") packed bytes: the flattened tensor two
                   codes a byte, the first value in the high nibble
                   (512 bytes)
  nf4_absmax.f32   its QuantState.absmax, one float32 per block of 64 (16)
  nf4_dequant.f32  bitsandbytes.functional.dequantize_4bit of the above,
                   float32 (4, 256): code value times absmax, one rounding

tune's NF4 block is {f32 absmax; u8 codes[32]}: block b of the flattened
tensor is absmax[b] followed by bytes 32·b .. 32·b + 31 of nf4_codes.bin.

Everything written is checked first: the packing (high nibble first) against
bitsandbytes' own dequantisation, the dequantised values against
table[code] · absmax computed in float32 with numpy, the codes against the
nearest-code rule written out here (bucketize over the fp32 midpoints of the
code table), and the CPU library's dequantisation against the pure-torch one.

bitsandbytes disagrees with itself at four decision points. On the CPU,
quantize_4bit bucketizes x · (1 / absmax) over the midpoints computed in
float32, (table[i] + table[i+1]) / 2; its CUDA kernel (dQuantizeNF4 in
csrc/kernels.cu) compares with decimal float literals such as
-0.8480964004993439f, and four of those literals (boundaries 0, 8, 12, 14)
round to the float next to the fp32 midpoint. A value exactly between the
two takes neighbouring codes on the two backends. The tie block holds one
such value per boundary (at positions 0, 12, 14 and 38 of that block); the
script checks that these four, and no other value, are where the two rules
part. The golden bytes are the CPU backend's (this script cannot run CUDA).
"""
from fractions import Fraction
import os

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

OUT = os.path.join("tests", "data", "quant")
ROWS, COLS, BLOCK = 4, 256, 64

# QLoRA's NF4 table (bitsandbytes' get_4bit_type("nf4")), as float32.
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def make_input(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[0] *= np.float32(0.02)   # weight-like scale
    x[3] *= np.float32(30.0)
    blocks = x.reshape(ROWS, COLS // BLOCK, BLOCK)
    blocks[1, 2] = 0.0
    b = blocks[2, 1]
    b[:] = rng.uniform(-1.0, 1.0, BLOCK).astype(np.float32) * np.float32(0.375)
    b[5], b[40] = np.float32(0.375), np.float32(-0.375)
    mid = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)
    ties = np.concatenate([mid, np.nextafter(mid, np.float32(-2)), np.nextafter(mid, np.float32(2)),
                           np.array([1.0, -1.0, 0.0], dtype=np.float32)])
    t = blocks[3, 3]
    t[:] = rng.uniform(-1.0, 1.0, BLOCK).astype(np.float32) * np.float32(0.99)
    t[:ties.size] = ties
    return x


def expected_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codes and absmax by the rule written out (fp32 throughout)."""
    b = x.reshape(-1, BLOCK)
    absmax = np.abs(b).max(axis=1).astype(np.float32)
    inv = (np.float32(1.0) / np.maximum(absmax, np.float32(1e-38))).astype(np.float32)
    scaled = np.clip(b * inv[:, None], -1, 1).astype(np.float32)
    mid = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)
    codes = np.searchsorted(mid, scaled.reshape(-1), side="left")  # midpoints strictly below
    return codes.astype(np.uint8), absmax


# The decision points of bitsandbytes' CUDA kernel dQuantizeNF4, as written there.
CUDA_LITERALS = [
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]


def f32_literal(text: str) -> np.float32:
    """The float a C compiler makes of the literal text + "f" (one rounding;
    numpy's float32(text) rounds to double first)."""
    q = Fraction(text)
    a = np.float32(float(q))
    cands = [np.nextafter(a, np.float32(-2)), a, np.nextafter(a, np.float32(2))]
    return min(cands, key=lambda c: abs(Fraction(float(c)) - q))


def cuda_rule_codes(x: np.ndarray) -> np.ndarray:
    """Codes by the CUDA kernel's rule: the number of literals strictly below x / absmax."""
    b = x.reshape(-1, BLOCK)
    absmax = np.abs(b).max(axis=1).astype(np.float32)
    inv = (np.float32(1.0) / np.maximum(absmax, np.float32(1e-38))).astype(np.float32)
    scaled = (b * inv[:, None]).astype(np.float32).reshape(-1)
    lit = np.array([f32_literal(t) for t in CUDA_LITERALS], dtype=np.float32)
    return (scaled[:, None] > lit[None, :]).sum(axis=1).astype(np.uint8)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    x = make_input(np.random.default_rng(20260217))
    t = torch.from_numpy(x.copy())
    packed, state = F.quantize_4bit(t, blocksize=BLOCK, quant_type="nf4")
    assert packed.device.type == "cpu" and packed.dtype == torch.uint8, packed
    assert state.quant_type == "nf4" and state.blocksize == BLOCK
    codes_bytes = packed.numpy().reshape(-1).copy()
    absmax = state.absmax.numpy().astype(np.float32).copy()
    assert codes_bytes.size == ROWS * COLS // 2 and absmax.size == ROWS * COLS // BLOCK
    assert np.allclose(F.get_4bit_type("nf4", device="cpu").numpy(), NF4, rtol=0, atol=0)

    deq = F.dequantize_4bit(packed, state).numpy().astype(np.float32).copy()
    assert deq.shape == (ROWS, COLS)

    # Unpack: high nibble first.
    codes = np.empty(codes_bytes.size * 2, dtype=np.uint8)
    codes[0::2] = codes_bytes >> 4
    codes[1::2] = codes_bytes & 15
    by_hand = (NF4[codes].reshape(-1, BLOCK) * absmax[:, None]).astype(np.float32).reshape(ROWS, COLS)
    assert np.array_equal(by_hand.view(np.uint32), deq.view(np.uint32)), "packing or dequantisation differs"
    # The low-nibble-first reading must not also fit (the check above means something).
    swapped = np.empty_like(codes)
    swapped[0::2], swapped[1::2] = codes[1::2], codes[0::2]
    assert not np.array_equal(NF4[swapped].reshape(-1, BLOCK) * absmax[:, None], deq.reshape(-1, BLOCK))

    # The pure-torch dequantisation (bitsandbytes' default backend) agrees with the CPU library.
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    code_t = torch.from_numpy(NF4.copy())
    generic = _dequantize_4bit_compute(packed.reshape(-1), state.absmax, code_t, BLOCK, (ROWS, COLS),
                                       torch.float32).numpy()
    assert np.array_equal(generic.view(np.uint32), deq.view(np.uint32))

    want_codes, want_absmax = expected_codes(x)
    assert np.array_equal(want_absmax.view(np.uint32), absmax.view(np.uint32)), "absmax"
    assert np.array_equal(want_codes, codes), "codes differ from the midpoint rule"

    # The special blocks are what they claim to be.
    cb = codes.reshape(ROWS, COLS // BLOCK, BLOCK)
    am = absmax.reshape(ROWS, COLS // BLOCK)
    assert am[1, 2] == 0 and np.all(cb[1, 2] == 7)
    assert am[2, 1] == np.float32(0.375) and cb[2, 1, 5] == 15 and cb[2, 1, 40] == 0
    assert am[3, 3] == 1.0
    tie_codes = cb[3, 3, :45]
    assert np.array_equal(tie_codes[0:15], np.arange(15)), tie_codes        # on a midpoint: the lower code
    assert np.array_equal(tie_codes[15:30], np.arange(15)), tie_codes       # just below: the lower code
    assert np.array_equal(tie_codes[30:45], np.arange(1, 16)), tie_codes    # just above: the upper code
    assert len(set(codes.tolist())) == 16

    # Where bitsandbytes' CUDA rule parts from its CPU output: the four tie values, nothing else.
    cuda = cuda_rule_codes(x)
    differ = np.nonzero(cuda != codes)[0]
    tie0 = (3 * (COLS // BLOCK) + 3) * BLOCK
    assert differ.tolist() == [tie0 + 0, tie0 + 12, tie0 + 14, tie0 + 38], differ
    assert np.all(np.abs(cuda.astype(int) - codes.astype(int)) <= 1)

    def write(name: str, data: np.ndarray) -> None:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(np.ascontiguousarray(data).tobytes())

    write("nf4_in.f32", x.astype("<f4"))
    write("nf4_codes.bin", codes_bytes.astype(np.uint8))
    write("nf4_absmax.f32", absmax.astype("<f4"))
    write("nf4_dequant.f32", deq.astype("<f4"))
    print("bitsandbytes", bitsandbytes.__version__, "torch", torch.__version__, "wrote", OUT)


if __name__ == "__main__":
    main()
