#!/usr/bin/env python3
"""Write an F32 (or F16) GGUF from a quantised one, so llama-quantize can make
other quantisations from it without `--allow-requantize`.

Needs: pip install gguf numpy

    python tools/reference/gguf_dequantize.py IN.gguf OUT.gguf [--dtype f32|f16]

Every tensor is dequantised with gguf-py (`gguf.quants.dequantize`, the numpy
port of ggml's dequantisation) and written as F32 (or F16 for the weight
matrices; 1-D tensors such as norms stay F32, as llama.cpp's converter writes
them). Metadata is copied key by key with its value types (as gguf-py's
gguf_new_metadata.py does), the alignment is kept, tensor order and names are
unchanged, and `general.file_type` is set to ALL_F32 / MOSTLY_F16. Values are
exactly what a reader of IN.gguf dequantises (F16 output rounds them once).
"""
import argparse
import sys

import numpy as np
import gguf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.input)
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    arch = arch_field.contents() if arch_field else "llama"
    writer = gguf.GGUFWriter(args.output, arch=arch, endianess=reader.endianess)
    align = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        writer.data_alignment = align.contents()

    ftype = gguf.LlamaFileType.ALL_F32 if args.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name == gguf.Keys.General.ALIGNMENT:
            continue  # set above through data_alignment
        vtype = field.types[0]
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_key_value(field.name, int(ftype), vtype)
            continue
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)

    counts: dict[str, int] = {}
    for t in reader.tensors:
        qt = gguf.GGMLQuantizationType(t.tensor_type)
        counts[qt.name] = counts.get(qt.name, 0) + 1
        values = gguf.quants.dequantize(t.data, qt).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order: ne reversed
        values = values.reshape(shape)
        if args.dtype == "f16" and values.ndim >= 2:
            writer.add_tensor(t.name, values.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
        else:
            writer.add_tensor(t.name, values, raw_dtype=gguf.GGMLQuantizationType.F32)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{args.input}: {len(reader.tensors)} tensors ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
          f" -> {args.output} ({args.dtype})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
