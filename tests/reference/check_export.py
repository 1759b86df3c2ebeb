#!/usr/bin/python3
"""Check a `scripts/export-torch` file against its checkpoint and the PyTorch model.

usage: /usr/bin/python3 tests/reference/check_export.py EXPORT.pt CKPT.h5 [--optim]

Passes (exit 0) when: the exported names are exactly model.param_shapes(cfg)'s names
(cfg = the checkpoint's config_json), every tensor is torch.float32 with that shape,
and its values equal the HDF5 dataset bit for bit (with --optim also both moments);
_furnace_meta's step and config match the file. Exit 1 on any mismatch.
"""
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    optim = "--optim" in sys.argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pt, ckpt = args
    try:
        state = torch.load(pt, map_location="cpu", weights_only=False)
    except TypeError:  # older torch without weights_only
        state = torch.load(pt, map_location="cpu")
    errors = []
    meta = state.get("_furnace_meta")
    if not isinstance(meta, dict):
        print("check_export.py: FAIL: no _furnace_meta dict")
        return 1
    cfg = model.config_from_json(meta["config_json"])
    shapes = model.param_shapes(cfg)
    names = [k for k in state if not k.startswith("_furnace")]
    if set(names) != set(shapes):
        errors.append(f"names differ: missing {sorted(set(shapes) - set(names))}, "
                      f"extra {sorted(set(names) - set(shapes))}")
    with h5py.File(ckpt, "r") as f:
        if meta["step"] != int(f["meta"].attrs["step"]):
            errors.append(f"step {meta['step']} != {int(f['meta'].attrs['step'])}")
        cj = f["meta/config_json"][()]
        cj = cj.decode() if isinstance(cj, bytes) else str(cj)
        if json.loads(cj.rstrip("\0")) != json.loads(meta["config_json"]):
            errors.append("config_json differs")

        def same(label, t, path, want_shape):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                errors.append(f"{label}: not a float32 tensor")
                return
            if tuple(t.shape) != tuple(want_shape):
                errors.append(f"{label}: shape {list(t.shape)}, param_shapes says {list(want_shape)}")
                return
            ref = f[path][()]
            if not np.array_equal(t.numpy(), ref):
                errors.append(f"{label}: values differ from {path}")

        for n in names:
            if n in shapes:
                same(n, state[n], "model/" + n, shapes[n])
        if optim:
            mom = state.get("_furnace_optim")
            if not isinstance(mom, dict):
                errors.append("no _furnace_optim dict")
            else:
                for which in ("exp_avg", "exp_avg_sq"):
                    for n in shapes:
                        t = mom[which].get(n)
                        if t is None:
                            errors.append(f"{which} of {n} missing")
                        else:
                            same(f"{which}[{n}]", t, f"optim/{n}/{which}", shapes[n])
    n_checked = len(names) * (3 if optim else 1)
    for e in errors:
        print("  FAIL", e)
    if errors:
        print(f"check_export.py: FAIL: {len(errors)} problem(s)")
        return 1
    print(f"check_export.py: PASS: {len(names)} tensors ({n_checked} arrays) match param_shapes and the HDF5 data exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
