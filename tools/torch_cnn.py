#!/usr/bin/env python3
"""PyTorch reference for speed-train's CNN feature network (native/src/core/cnn.cpp).

Builds the same network as a plain nn.Module (features = nn.Sequential of Conv2d/ReLU,
two convolutions per stage, the second of stride 2; fc1 -> ReLU -> fc2), loads a
network file written by `speed-train featnet --arch cnn` (safetensors; its config is
in the metadata) with load_state_dict(strict=True), so the parameter names and shapes
must be the module's, and computes in float64:

  check NET X Y OUT   X: float32 [N, C, H, W] raw little-endian, Y: int32 [N] raw;
                      writes OUT (JSON): logits [N, K], features [N, fc_hidden] (fc1
                      after ReLU), loss (mean cross-entropy) and the gradient of that
                      loss for every parameter, by name

Needs Debian's python3-torch (no download of any kind).
"""
import json
import sys

import torch
from torch import nn

from torch_vae import read_safetensors  # the same folder's minimal safetensors reader


class CNN(nn.Module):
    def __init__(self, in_channels, channels, fc_hidden, num_classes, input_size):
        super().__init__()
        layers, c, s = [], in_channels, input_size
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.ReLU()]
            c, s = ch, (s + 1) // 2
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c * s * s, fc_hidden)
        self.fc2 = nn.Linear(fc_hidden, num_classes)

    def forward(self, x):
        f = torch.relu(self.fc1(torch.flatten(self.features(x), 1)))
        return f, self.fc2(f)


def check(net_file, x_file, y_file, out_file):
    sd, meta = read_safetensors(net_file)
    sd = {k: v.to(torch.float64) for k, v in sd.items()}
    cfg = json.loads(meta["config"])
    if cfg.get("arch") != "cnn":
        raise SystemExit(f"{net_file}: not a CNN feature network (arch {cfg.get('arch')!r})")
    m = CNN(cfg["inChannels"], cfg["channels"], cfg["fcHidden"], cfg["numClasses"], cfg["inputSize"]).double()
    m.load_state_dict(sd, strict=True)
    S, C = cfg["inputSize"], cfg["inChannels"]
    x = torch.frombuffer(bytearray(open(x_file, "rb").read()), dtype=torch.float32).to(torch.float64)
    x = x.reshape(-1, C, S, S)
    y = torch.frombuffer(bytearray(open(y_file, "rb").read()), dtype=torch.int32).to(torch.int64)
    f, z = m(x)
    loss = nn.functional.cross_entropy(z, y)
    loss.backward()
    out = {
        "logits": z.detach().flatten().tolist(),
        "features": f.detach().flatten().tolist(),
        "loss": loss.item(),
        "grads": {k: p.grad.flatten().tolist() for k, p in m.named_parameters()},
    }
    with open(out_file, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "check":
        raise SystemExit(__doc__)
    check(*sys.argv[2:])
