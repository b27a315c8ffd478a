#!/usr/bin/env python3
"""Write a copy of a GGUF model whose tensors are all float32: every tensor dequantized with
gguf-py (llama.cpp's own Python package), every metadata key copied.  The copy has the same
weights as the original, so llama.cpp running it computes the model without rounding
activations to 8 bits before its matmuls (it quantizes activations only for quantized
weights); `kvx --weights f32` on the original computes the same thing (the dequantized values
are bit-identical).

    python tools/reference/gguf_f32.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize


def field_value(f):
    """The Python value of a metadata field and its GGUF type (and element type)."""
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        sub = f.types[1]
        if sub == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data], t, sub
        return [f.parts[i].tolist()[0] for i in f.data], t, sub
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "surrogateescape"), t, None
    return f.parts[f.data[0]].tolist()[0], t, None


def convert(src, dst):
    r = GGUFReader(src)
    arch, _, _ = field_value(r.fields["general.architecture"])
    w = GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the writer emits these itself
        val, t, sub = field_value(f)
        w.add_key_value(name, val, t, sub_type=sub)
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w.add_tensor(t.name, a.reshape(shape), raw_dtype=GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])
