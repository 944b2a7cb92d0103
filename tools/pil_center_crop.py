#!/usr/bin/env python3
"""Fixture for test/center-crop.test.ts: ADM/DiT's center_crop_arr run by Pillow.

Inputs are synthetic RGB images given by a formula (the same one the test
evaluates), so the fixture checks resampling only, not file decoding. Also
writes a JPEG made by Pillow and Pillow's decode + crop of it, to measure the
whole path (libjpeg in Pillow vs sharp's libvips/mozjpeg), and PNGs in Pillow's
other modes (L, LA, RGBA, P, I;16) with Pillow's convert("RGB") of them.

    /usr/bin/python3 tools/pil_center_crop.py test/fixtures
"""
import base64, gzip, json, os, sys

import numpy as np
from PIL import Image


def center_crop_arr(pil_image, image_size):
    # https://github.com/openai/guided-diffusion/blob/8fb3ad9197f16bbc40620447b2742e13458d2831/guided_diffusion/image_datasets.py#L126
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


def pattern(w, h):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((x * 31 + y * 17 + c * 101 + (x * x + 3 * y * y) % 97) % 256).astype(np.uint8)


CASES = [(37, 23, 16), (300, 170, 48), (517, 389, 40), (64, 64, 32), (129, 260, 64), (20, 13, 24), (1001, 999, 40)]


def main(out_dir):
    cases = []
    for w, h, s in CASES:
        out = center_crop_arr(Image.fromarray(pattern(w, h)), s)
        assert out.shape == (s, s, 3)
        cases.append({"w": w, "h": h, "size": s, "rgb": base64.b64encode(out.tobytes()).decode()})
    # A JPEG written by Pillow (quality 90, 4:2:0) and Pillow's decode of it, whole and cropped.
    jpg = os.path.join(out_dir, "pil-pattern.jpg")
    Image.fromarray(pattern(160, 120)).save(jpg, quality=90)
    im = Image.open(jpg).convert("RGB")
    dec = np.array(im)
    crop = center_crop_arr(im, 56)
    doc = {
        "pillow": Image.__version__ if hasattr(Image, "__version__") else __import__("PIL").__version__,
        "cases": cases,
        "jpeg": {"file": "pil-pattern.jpg", "w": 160, "h": 120, "size": 56,
                 "decoded": base64.b64encode(dec.tobytes()).decode(), "cropped": base64.b64encode(crop.tobytes()).decode()},
    }
    with gzip.open(os.path.join(out_dir, "center-crop-pil.json.gz"), "wt") as f:
        json.dump(doc, f)
    modes(out_dir)


def modes(out_dir):
    """PNGs in Pillow's other modes and what Image.open(f).convert("RGB") gives for them."""
    y, x = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    rgb = np.stack([(x * 20) % 256, (y * 25) % 256, ((x + y) * 13) % 256], -1).astype(np.uint8)
    imgs = {
        "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(np.stack([rgb[..., 0], rgb[..., 1]], -1), "LA"),
        "RGBA": Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1), "RGBA"),
        "P": Image.fromarray(rgb).quantize(16),
        "I16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 3, "I;16"),
    }
    res = {}
    for k, im in imgs.items():
        f = os.path.join(out_dir, f"pil-mode-{k}.png")
        im.save(f)
        res[k] = base64.b64encode(np.array(Image.open(f).convert("RGB")).tobytes()).decode()
    with open(os.path.join(out_dir, "pil-modes.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures")
