#!/usr/bin/env python3
"""Writes safetensors files with the reference writer (Python's `safetensors`
package over numpy arrays) for unimem's interop test, tests/load_python.rs.

    python3 tools/safetensors_interop.py OUT_DIR

OUT_DIR receives:
  every_dtype.safetensors   numpy's dtypes (bool, ints, floats, complex64),
                            a scalar, a zero-size tensor, odd shapes, metadata
  exotic.safetensors        bfloat16, the float8s and float4 (bytes made with
                            numpy, written through `serialize_file`)
  sharded/                  a checkpoint in three shards and its
                            model.safetensors.index.json, laid out as
                            transformers' save_pretrained writes one
  manifest.json             for each file, each tensor's dtype, shape, bytes
                            (hex) and, where numpy reads the dtype, the exact
                            sum of its values (math.fsum)

Exit status 3 (and a line saying so) when numpy or safetensors is missing:
the test skips then, unless UNIMEM_REQUIRE_PYTHON_SAFETENSORS is set.
"""
import json
import math
import os
import sys

try:
    import numpy as np
    import safetensors
    from safetensors import TensorSpec, serialize_file
    from safetensors.numpy import save_file
except ImportError as error:
    print(f"missing Python package: {error}", file=sys.stderr)
    sys.exit(3)

rng = np.random.default_rng(20240607)


def values(dtype, shape):
    """Values of `dtype` that use every bit: the full range of integers,
    normal and special floats."""
    n = int(np.prod(shape, dtype=np.int64))
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    out = (rng.standard_normal(n) * 1000).astype(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-30, 65504.0], dtype=np.float64)
    out[: min(n, len(specials))] = specials[: min(n, len(specials))].astype(dtype)
    return out.reshape(shape)


def entry(dtype_name, array, raw=None):
    raw = array.tobytes() if raw is None else raw
    item = {"dtype": dtype_name, "shape": list(array.shape), "hex": raw.hex()}
    if array is not None and array.dtype.kind in "biuf" and array.size:
        finite = array.astype(np.float64)
        finite = finite[np.isfinite(finite)]
        item["sum"] = math.fsum(finite.tolist())
        item["finite"] = int(finite.size)
    return item


def main(out):
    os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
    manifest = {"safetensors": safetensors.__version__, "numpy": np.__version__, "files": {}}

    # Every dtype numpy has, odd shapes, a scalar, a zero-size tensor.
    names = {
        "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
        "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
        "float16": "F16", "float32": "F32", "float64": "F64", "complex64": "C64",
    }
    tensors, expected = {}, {}
    for i, (np_name, st_name) in enumerate(names.items()):
        shape = (3, 5, 7 + i)
        array = values(np_name, shape)
        tensors[f"layer.{i}.{np_name}"] = array
        expected[f"layer.{i}.{np_name}"] = entry(st_name, array)
    for name, array, st_name in [
        ("scalar", np.array(3.25, dtype=np.float32), "F32"),
        ("zero_size", np.zeros((0, 4), dtype=np.float16), "F16"),
        ("odd", values("int16", (1, 13, 1, 3)), "I16"),
        ("long_vector", values("float32", (100_003,)), "F32"),
    ]:
        tensors[name] = array
        expected[name] = entry(st_name, array)
    path = os.path.join(out, "every_dtype.safetensors")
    save_file(tensors, path, metadata={"written_by": "tools/safetensors_interop.py", "format": "np"})
    manifest["files"]["every_dtype.safetensors"] = expected

    # The dtypes numpy does not have, as the reference writer takes them:
    # raw bytes with a dtype name.
    keep, specs, expected = [], {}, {}
    as_f32 = values("float32", (4, 33))
    bf16 = (as_f32.view(np.uint32) >> 16).astype(np.uint16)
    exotic = [
        ("bf16", "bfloat16", "BF16", bf16, bf16.shape),
        ("e4m3", "float8_e4m3fn", "F8_E4M3", values("uint8", (9, 7)), (9, 7)),
        ("e5m2", "float8_e5m2", "F8_E5M2", values("uint8", (5, 5)), (5, 5)),
        ("e8m0", "float8_e8m0fnu", "F8_E8M0", values("uint8", (17,)), (17,)),
        # Two 4-bit values a byte: the writer takes the shape in bytes and
        # writes the last dimension doubled.
        ("f4", "float4_e2m1fn_x2", "F4", values("uint8", (6, 3)), (6, 6)),
    ]
    for name, writer_name, st_name, array, shape in exotic:
        writer_shape = array.shape
        array = np.ascontiguousarray(array)
        keep.append(array)
        specs[name] = TensorSpec(
            dtype=writer_name, shape=writer_shape, data_ptr=array.ctypes.data, data_len=array.nbytes
        )
        item = {"dtype": st_name, "shape": list(shape), "hex": array.tobytes().hex()}
        if name == "bf16":
            # The values a bf16 reader gets: the f32s cut to their top half.
            cut = (bf16.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            item["sum"] = math.fsum(cut[np.isfinite(cut)].tolist())
            item["finite"] = int(np.isfinite(cut).sum())
        expected[name] = item
    serialize_file(specs, os.path.join(out, "exotic.safetensors"), metadata=None)
    manifest["files"]["exotic.safetensors"] = expected

    # A sharded checkpoint, as save_pretrained writes one.
    shards = [
        {f"model.layers.{i}.weight": values("float32", (64, 61 + i)) for i in range(4)},
        {f"model.layers.{i}.bias": values("float16", (127 + i,)) for i in range(5)}
        | {"model.embed": values("float32", (1024, 259))},
        {"lm_head.weight": values("float64", (33, 17)), "lm_head.scale": np.array(2.0, np.float32)},
    ]
    weight_map, total = {}, 0
    expected = {}
    for number, tensors in enumerate(shards, start=1):
        shard = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(out, "sharded", shard), metadata={"format": "pt"})
        for name, array in tensors.items():
            weight_map[name] = shard
            total += array.nbytes
            expected[name] = entry({"float32": "F32", "float16": "F16", "float64": "F64"}[array.dtype.name], array)
    with open(os.path.join(out, "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    manifest["files"]["sharded/model.safetensors.index.json"] = expected

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    print(f"wrote {out} with safetensors {safetensors.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
