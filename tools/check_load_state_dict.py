#!/usr/bin/env python3
"""Runs the README's `DiT_S_2(...).load_state_dict(...)` snippet on a checkpoint this project
wrote: /usr/bin/python3 tools/check_load_state_dict.py CHECKPOINT_DIR...

The snippet is read from README.md (the ```python block after the marker
`<!-- checked by tools/check_load_state_dict.py -->`), its load_file("...") path replaced by
CHECKPOINT_DIR/ema.safetensors. `from models import DiT_S_2` (facebookresearch/DiT) is served
by tools/torch_dit.py, which has DiT's constructor signature and parameter names, with
DiT_S_2 defined as DiT's models.py defines it; `safetensors.torch.load_file` falls back to
torch_dit.load_safetensors when the package is not installed. load_state_dict is strict, so
a missing, extra or misshapen tensor fails. Prints `<dir>: ok: <n> tensors` or `<dir>: error: ...`
per directory; the exit status is 1 when any failed.
"""
import os
import re
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_dit  # noqa: E402

MARK = "<!-- checked by tools/check_load_state_dict.py -->"


def snippet() -> str:
    text = open(os.path.join(HERE, "..", "README.md"), encoding="utf-8").read()
    at = text.index(MARK)
    m = re.search(r"```python\n(.*?)```", text[at:], re.S)
    if not m:
        raise SystemExit("README.md: no ```python block after the marker")
    return m.group(1)


def main() -> None:
    models = types.ModuleType("models")
    # facebookresearch/DiT models.py: def DiT_S_2(**kwargs): return DiT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kwargs)
    models.DiT_S_2 = lambda **kw: torch_dit.DiT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kw)
    sys.modules.setdefault("models", models)
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        st = types.ModuleType("safetensors")
        st.torch = types.ModuleType("safetensors.torch")

        def load_file(p):
            # torch_dit.load_safetensors tries the real package first: hide this stand-in meanwhile.
            saved = {k: sys.modules.pop(k) for k in ("safetensors", "safetensors.torch")}
            sys.modules["safetensors"] = None
            try:
                return torch_dit.load_safetensors(p)[0]
            finally:
                sys.modules.update(saved)

        st.torch.load_file = load_file
        sys.modules["safetensors"] = st
        sys.modules["safetensors.torch"] = st.torch
    failed = False
    for ckpt in sys.argv[1:]:
        code = re.sub(r'load_file\("[^"]*"\)', f"load_file({os.path.join(ckpt, 'ema.safetensors')!r})", snippet())
        scope: dict = {}
        try:
            exec(compile(code, "README.md snippet", "exec"), scope)
            print(f"{ckpt}: ok: {len(scope['model'].state_dict())} tensors")
        except Exception as e:  # report and go on: one run checks several checkpoints
            failed = True
            print(f"{ckpt}: error: {type(e).__name__}: {e}".replace("\n", " "))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
