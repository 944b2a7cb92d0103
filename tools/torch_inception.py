#!/usr/bin/env python3
"""PyTorch reference for speed-train's Inception-v3 (src/eval/inception.ts).

Builds pytorch-fid's FID Inception-v3 (torchvision's Inception3 with 1008 classes, no
auxiliary head, and the FID blocks FIDInceptionA / C / E_1 / E_2 written here from
pytorch-fid's published definitions), fills it with SEEDED random weights and runs it
the way pytorch-fid does: x in [0, 1], bilinear resize to 299 (align_corners=False),
2x - 1. Outputs: pool3 [N, 2048], logits = fc(pool3) [N, 1008] and spatial [N, 2023]:
Mixed_6d.branch1x1 (after BN + ReLU; TF's mixed_6/conv:0) channels 0..6, flattened
in (h, w, c) order as ADM's evaluator does with TF's NHWC tensor.

  weights --seed S --out DIR   the weights as a legacy torch.save file (inception.pth,
                               the format of pytorch-fid's published file) and a zip one
                               (inception.pt); the same seed gives the same weights
  fixture --seed S --out DIR   the weights, plus the test images (inputs.npz) and the
                               expected outputs (expected.npz), and seed.json
  expect --seed S --inputs F --out F   the expected outputs of inputs F under seed S
  names --out FILE             every state dict name and shape (JSON), in order
  bench --threads T --size S --batch B --iters I   images/s of the same network
                               (uint8 S x S RGB -> resize -> features; best of I runs
                               after a warm-up) and CPU seconds per image, one JSON line

Needs Debian's python3-torch and python3-torchvision (no download of any kind).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import inception as tvi


class FIDInceptionA(tvi.InceptionA):
    """InceptionA with the TF graph's average pool: count_include_pad=False."""

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, bd, bp], 1)


class FIDInceptionC(tvi.InceptionC):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(tvi.InceptionE):
    """E_1 (average pool, count_include_pad=False) or E_2 (3x3 stride-1 max pool)."""

    def __init__(self, in_channels, max_pool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            bp = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)


def fid_inception_v3():
    net = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    # assigning an existing attribute keeps its place in the state dict order
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    return net.eval()


def forward(net, x):
    """x float [N, 3, H, W] in [0, 1] -> (pool3, logits, spatial), pytorch-fid's path."""
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    x = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for name in ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"]:
        x = getattr(net, name)(x)
    spatial = net.Mixed_6d.branch1x1(x)  # BasicConv2d: conv, BN, ReLU
    for name in ["Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
        x = getattr(net, name)(x)
    pool3 = F.adaptive_avg_pool2d(x, 1).flatten(1)
    logits = net.fc(pool3)
    n = spatial.shape[0]
    spatial = spatial[:, :7].permute(0, 2, 3, 1).reshape(n, -1)
    return pool3, logits, spatial


def seeded_net(seed):
    """Random weights from `seed`; BatchNorm running statistics measured on a seeded batch
    (so every layer's activations stay near unit scale instead of vanishing or exploding)."""
    torch.manual_seed(seed)
    net = fid_inception_v3()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("conv.weight"):
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("bn.weight"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif name.endswith("bn.bias"):
                p.copy_(torch.randn_like(p) * 0.2)
            elif name == "fc.weight":
                p.copy_(torch.randn_like(p) * (1.0 / p.shape[1]) ** 0.5)
            elif name == "fc.bias":
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                raise SystemExit(f"unexpected parameter {name}")
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch gives its statistics
        net.train()
        # smooth (upsampled) and noisy images: the test images are both kinds
        small = F.interpolate(torch.rand(2, 3, 32, 32), size=(299, 299), mode="bilinear", align_corners=False)
        calib = torch.cat([small, torch.rand(2, 3, 299, 299)])
        forward(net, calib)
        # A floor under the variances: a channel (nearly) constant on the calibration batch
        # would divide by ~0 and amplify every float32 rounding before it by orders of
        # magnitude (without it, PyTorch's own float32 and float64 pool3 differ by 5e-5, so
        # a comparison at 1e-4 would pass or fail by luck; with it, by 7e-7, while the
        # outputs of different images still differ by half their range).
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var += 0.3 * m.running_var.mean()
        net.eval()
    return net


def state_dict(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def save_weights(net, out):
    os.makedirs(out, exist_ok=True)
    sd = state_dict(net)
    torch.save(sd, os.path.join(out, "inception.pth"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(out, "inception.pt"))


def test_inputs(seed):
    """Odd sizes and channel counts: 2 RGB 32x32, 1 grey 45x37, 1 RGBA 299x299 (no resize)."""
    rng = np.random.default_rng(seed)
    return {
        "a": rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, size=(1, 45, 37, 1), dtype=np.uint8),
        "c": rng.integers(0, 256, size=(1, 299, 299, 4), dtype=np.uint8),
    }


def to_float(images):
    """uint8 [N, H, W, C] -> float [N, 3, H, W] in [0, 1]: grey replicated, alpha dropped."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x[:, :3].contiguous()


def expected(net, inputs):
    """The outputs computed in float64 (then stored as float32): the reference is the
    network's exact value, not one float32 rounding of it."""
    out = {}
    net = net.double()
    with torch.no_grad():
        for k, v in inputs.items():
            pool3, logits, spatial = (t.float() for t in forward(net, to_float(v).double()))
            out[f"{k}_pool3"] = pool3.numpy()
            out[f"{k}_logits"] = logits.numpy()
            out[f"{k}_spatial"] = spatial.numpy()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["weights", "fixture", "expect", "names", "bench"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--inputs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.command != "bench" and not a.out:
        ap.error(f"{a.command} needs --out")
    if a.command == "names":
        sd = fid_inception_v3().state_dict()
        rows = [[k, list(v.shape)] for k, v in sd.items() if not k.endswith("num_batches_tracked")]
        with open(a.out, "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
        return
    if a.command == "bench":
        net = seeded_net(a.seed)
        rng = np.random.default_rng(a.seed)
        imgs = rng.integers(0, 256, size=(a.batch, a.size, a.size, 3), dtype=np.uint8)
        # one warm-up, then the best of `iters` runs (wall and process CPU seconds, all
        # threads), as tools/inception_bench_cpu.mts times ours
        wall = cpu = float("inf")
        with torch.no_grad():
            forward(net, to_float(imgs))
            for _ in range(a.iters):
                t0, c0 = time.perf_counter(), time.process_time()
                forward(net, to_float(imgs))
                wall = min(wall, time.perf_counter() - t0)
                cpu = min(cpu, time.process_time() - c0)
        print(json.dumps({"impl": "torch " + torch.__version__, "threads": a.threads, "size": a.size,
                          "batch": a.batch, "images_per_s": a.batch / wall, "cpu_s_per_image": cpu / a.batch}))
        return
    net = seeded_net(a.seed)
    if a.command == "weights":
        save_weights(net, a.out)
        return
    if a.command == "expect":
        data = np.load(a.inputs)
        np.savez(a.out, **expected(net, {k: data[k] for k in data.files}))
        return
    save_weights(net, a.out)
    inputs = test_inputs(a.seed)
    np.savez(os.path.join(a.out, "inputs.npz"), **inputs)
    np.savez(os.path.join(a.out, "expected.npz"), **expected(net, inputs))
    with open(os.path.join(a.out, "seed.json"), "w") as f:
        json.dump({"seed": a.seed, "torch": torch.__version__, "generator": "tools/torch_inception.py"}, f)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
