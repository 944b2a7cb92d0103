#!/usr/bin/env python3
"""Writes the .pt fixtures of test/convert.test.ts with PyTorch (Debian's python3-torch 1.13:
/usr/bin/python3 tools/make_pt_fixtures.py), and expected.json with what each converted
tensor must hold (shape, dtype, SHA-256 of its contiguous little-endian bytes, first values).

  tiny_f32.pt, tiny_f16.pt, tiny_bf16.pt   a tiny DiT state_dict (tools/torch_dit.py), as
                                           torch.save(model.state_dict()) writes it (an
                                           OrderedDict with _metadata, like DiT-XL-2-256x256.pt)
  nested.pt        {'model': sd, 'ema': sd2, 'opt': {...}, 'steps': 7, 'args': Namespace(...)}
                   (DiT train.py's checkpoint layout)
  strided.pt       non-contiguous tensors: a transpose, a slice at a storage offset, two views
                   of one storage, an expanded (stride 0) tensor
  malicious.pt     a pickle whose __reduce__ calls os.system: must be refused, never run
  legacy.pth       the legacy (pre-1.6, non-zip) layout, torch.save(..., _use_new_zipfile_serialization=False),
                   as pytorch-fid's Inception weights have it: an OrderedDict of conv / batch-norm
                   tensors (F32, I64 num_batches_tracked), an F16 and a BF16 tensor, a transposed view
                   and a slice at an offset sharing one storage
  legacy_nested.pth  {'model': sd, 'ema': sd2, 'steps': 7, 'args': Namespace(...)} in the legacy layout
"""
import argparse
import collections
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dit import DiT  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "pt")


def describe(t: torch.Tensor) -> dict:
    c = t.contiguous()
    if c.dtype in (torch.float16, torch.bfloat16):
        raw = c.view(torch.int16).numpy().tobytes()
    else:
        raw = c.numpy().tobytes()
    dtype = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32"}[c.dtype]
    return {
        "shape": list(c.shape),
        "dtype": dtype,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "first": [float(v) for v in c.flatten()[:4].float()],
    }


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pickle-ran-code > /tmp/speed-train-pwned",))


def main() -> None:
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    model = DiT(input_size=4, patch_size=2, in_channels=3, hidden_size=16, depth=1, num_heads=2,
                num_classes=2, class_dropout_prob=0.1, learn_sigma=True)
    with torch.no_grad():  # DiT zero-initialises adaLN and the final layer: give every tensor values
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    sd = model.state_dict()
    expected = {}
    for name, dtype in (("tiny_f32", torch.float32), ("tiny_f16", torch.float16), ("tiny_bf16", torch.bfloat16)):
        d = collections.OrderedDict((k, v.to(dtype)) for k, v in sd.items())
        d._metadata = sd._metadata  # what state_dict() carries
        torch.save(d, os.path.join(OUT, name + ".pt"))
        expected[name] = {k: describe(v) for k, v in d.items()}
    ema = collections.OrderedDict((k, v * 0.5) for k, v in sd.items())
    ckpt = {"model": sd, "ema": ema, "opt": {"state": {0: {"step": 3, "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 1e-4}]},
            "steps": 7, "args": argparse.Namespace(model="DiT-S/2", lr=1e-4)}
    torch.save(ckpt, os.path.join(OUT, "nested.pt"))
    expected["nested.ema"] = {k: describe(v) for k, v in ema.items()}
    expected["nested.model"] = {k: describe(v) for k, v in sd.items()}
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    strided = {
        "transposed": base.t(),                 # strides (1, 6)
        "sliced": base[1:3, 2:5],               # offset 8, strides (6, 1)
        "row": base[2],                         # same storage, offset 12
        "expanded": torch.tensor([1.5, -2.0]).expand(3, 2),  # stride (0, 1)
        "half_t": base.half().t()[1:],          # F16, offset and transpose
    }
    torch.save(strided, os.path.join(OUT, "strided.pt"))
    expected["strided"] = {k: describe(v) for k, v in strided.items()}
    torch.save({"x": torch.zeros(1), "evil": Evil()}, os.path.join(OUT, "malicious.pt"))
    conv = torch.nn.Conv2d(3, 4, 3, bias=False)
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4))
        bn.running_var.copy_(torch.rand(4) + 0.5)
        bn.weight.copy_(torch.randn(4))
    bn.num_batches_tracked += 5
    legacy = collections.OrderedDict()
    for k, v in conv.state_dict().items():
        legacy["Conv2d_1a_3x3.conv." + k] = v
    for k, v in bn.state_dict().items():
        legacy["Conv2d_1a_3x3.bn." + k] = v
    shared = torch.randn(5, 6)
    legacy["fc.weight"] = shared.t()           # strides (1, 6)
    legacy["fc.bias"] = shared[3, 1:]          # offset 19 in the same storage
    legacy["half"] = torch.randn(3, 2).half()
    legacy["bf16"] = torch.randn(5).to(torch.bfloat16)
    legacy["ints"] = torch.arange(-3, 3, dtype=torch.int32)
    torch.save(legacy, os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
    expected["legacy"] = {k: describe(v) for k, v in legacy.items()}
    small = collections.OrderedDict((k, v) for k, v in sd.items() if k.startswith(("x_embedder", "y_embedder", "final_layer.linear")))
    ema_small = collections.OrderedDict((k, (v * 0.5).half()) for k, v in small.items())
    torch.save({"model": small, "ema": ema_small, "steps": 7, "args": argparse.Namespace(model="DiT-S/2", lr=1e-4)},
               os.path.join(OUT, "legacy_nested.pth"), _use_new_zipfile_serialization=False)
    expected["legacy_nested.ema"] = {k: describe(v) for k, v in ema_small.items()}
    expected["legacy_nested.model"] = {k: describe(v) for k, v in small.items()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "tensors": expected}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
