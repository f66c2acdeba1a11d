#!/usr/bin/env python3
"""Golden files for tune's GGUF block dequantisers (tests/test_quant.c).

Needs: pip install gguf numpy   (made with gguf 0.19.0, numpy 2.4)

Run from the repository root:
    python tools/reference/make_quant_golden.py

Writes into tests/data/quant/ (deterministic: a fixed seed, a rerun writes
the same bytes):
  blocks_<TYPE>.bin      8 blocks of random bytes for each type tune reads
                         (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K),
                         with every f16 scale field (d, m, dmin) replaced by a
                         random finite normal-range f16 (random sign, exponent
                         and mantissa), so no value is NaN or Inf; for F32,
                         F16 and BF16, 64 random finite values (F16 includes
                         subnormals)
  expected_<TYPE>.f32    gguf.quants.dequantize of those bytes, raw
                         little-endian float32 (tune must match bit for bit)
  q8_0_quantize_in.f32   256 float32 values (8 blocks: normal values at
                         several scales, an all-zero block, values so small
                         that d is an f16 subnormal, exact halves that test
                         rounding away from zero, a block whose extreme is
                         negative)
  q8_0_quantize_out.bin  gguf.quants.quantize(in, Q8_0): gguf's numpy port of
                         ggml's reference quantiser (quantize_row_q8_0_ref),
                         8 blocks of 34 bytes
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

OUT = os.path.join("tests", "data", "quant")
N_BLOCKS = 8
N_PLAIN = 64

# Byte offsets of the f16 scale fields of each block type (ggml-common.h).
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82],   # {scales[16]; qs[64]; d; dmin}
    QT.Q3_K: [108],      # {hmask[32]; qs[64]; scales[12]; d}
    QT.Q4_K: [0, 2],     # {d; dmin; scales[12]; qs[128]}
    QT.Q5_K: [0, 2],     # {d; dmin; scales[12]; qh[32]; qs[128]}
    QT.Q6_K: [208],      # {ql[128]; qh[64]; scales[16]; d}
}


def normal_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random f16 bit patterns with exponent 1..30 (finite, normal)."""
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    exp = rng.integers(1, 31, n, dtype=np.uint16) << 10
    mant = rng.integers(0, 1024, n, dtype=np.uint16)
    return (sign | exp | mant).astype(np.uint16)


def block_bytes(rng: np.random.Generator, qt: QT) -> np.ndarray:
    _, size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, (N_BLOCKS, size), dtype=np.uint8)
    for off in F16_FIELDS[qt]:
        raw[:, off:off + 2] = normal_f16(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    return raw


def plain_bytes(rng: np.random.Generator, qt: QT) -> np.ndarray:
    if qt == QT.F32:  # exponent 1..254: finite, normal
        bits = (rng.integers(0, 2, N_PLAIN, dtype=np.uint32) << 31) | \
               (rng.integers(1, 255, N_PLAIN, dtype=np.uint32) << 23) | rng.integers(0, 1 << 23, N_PLAIN, dtype=np.uint32)
        return bits.astype(np.uint32).view(np.uint8)
    if qt == QT.F16:  # exponent 0..30: finite, subnormals included
        bits = (rng.integers(0, 2, N_PLAIN, dtype=np.uint16) << 15) | \
               (rng.integers(0, 31, N_PLAIN, dtype=np.uint16) << 10) | rng.integers(0, 1024, N_PLAIN, dtype=np.uint16)
        return bits.astype(np.uint16).view(np.uint8)
    # BF16: exponent 0..254
    bits = (rng.integers(0, 2, N_PLAIN, dtype=np.uint16) << 15) | \
           (rng.integers(0, 255, N_PLAIN, dtype=np.uint16) << 7) | rng.integers(0, 128, N_PLAIN, dtype=np.uint16)
    return bits.astype(np.uint16).view(np.uint8)


def q8_0_input(rng: np.random.Generator) -> np.ndarray:
    blocks = [
        rng.standard_normal(32),
        rng.standard_normal(32) * 0.01,
        rng.standard_normal(32) * 100.0,
        rng.uniform(-1.0, 1.0, 32),
        np.zeros(32),
        rng.standard_normal(32) * 1e-5,     # d = absmax / 127 is an f16 subnormal
        # absmax 127 → d = 1, id = 1: the halves round away from zero
        np.array([127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 62.5, -62.5, 126.5, -126.5, 0.49999997]
                 + list(rng.uniform(-127, 127, 20))),
        -np.abs(rng.standard_normal(32)) * 3.0,  # the extreme is negative
    ]
    return np.concatenate(blocks).astype(np.float32)


def write(path: str, data: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(data).tobytes())


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20260101)
    for qt in [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0,
               QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]:
        raw = plain_bytes(rng, qt) if qt in (QT.F32, QT.F16, QT.BF16) else block_bytes(rng, qt)
        values = gguf.quants.dequantize(raw.reshape(1, -1), qt).astype(np.float32, copy=False).reshape(-1)
        assert np.all(np.isfinite(values)), qt.name
        block, size = gguf.GGML_QUANT_SIZES[qt]
        assert values.size * size == raw.size * block, qt.name
        write(os.path.join(OUT, f"blocks_{qt.name}.bin"), raw)
        write(os.path.join(OUT, f"expected_{qt.name}.f32"), values.astype("<f4"))

    x = q8_0_input(rng)
    q = gguf.quants.quantize(x.reshape(1, -1), QT.Q8_0)
    assert q.shape == (1, 8 * 34)
    write(os.path.join(OUT, "q8_0_quantize_in.f32"), x.astype("<f4"))
    write(os.path.join(OUT, "q8_0_quantize_out.bin"), q)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
