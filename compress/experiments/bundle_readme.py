"""The README.md inside a bundle: what the model is, how to run it, what it was measured to do, and where."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def readme(m: dict[str, Any]) -> str:
    pre, fig, model, mach = m["preprocessing"], m["figures"], m["model"], m["machine"]
    lat = "; ".join(f"{rt} b{b} {v['median_ms']:.2f} ms" for rt, per in fig["latency"].items() for b, v in per.items())
    has = ", ".join(k for k, v in (mach.get("instruction_sets") or {}).items() if v) or "unknown"
    runtime = model["runtimes"][0]
    need = "onnxruntime" if model["format"] == "onnx" else "openvino"
    return f"""# {m['compressor']} model of {m['dataset']} (row {m['row_id']})

The model that `compress` measured, as it measured it: `{model['file']}` ({model['format']}, {m['backend']}),
{len(m['classes'])} classes, input {pre['image_size']}x{pre['image_size']} RGB.

## Run it

```bash
pip install numpy pillow {need}
python predict.py photo.jpg more_photos/          # a table: file, label, probability
python predict.py photos/ --top-k 3 --json        # or --csv
```

No PyTorch is needed. `predict.py` checks every file's sha256 against `bundle.json` first and refuses a changed
bundle. It decodes and resizes each image as the harness did when it scored the row: Pillow, any mode converted
to RGB, resize `{pre['resize'] or 'none (the built-in data are arrays at the model size)'}`, normalization
`{pre['normalization']}` ({pre.get('formula', '')}, channel order {pre.get('channel_order', 'RGB')}). Images are
**not** rotated by their EXIF orientation, as the harness did not rotate them. `.npy` files are images already at
the model's size (float32, 3 x H x W, in [0, 1]). Exit code 0: all predicted; 1: some image could not be read (the
others are still printed); 2: bad arguments or a changed bundle. With compress installed,
`python -m compress predict THIS_FOLDER PHOTO` runs the same code and `python -m compress verify THIS_FOLDER --data
FOLDER` re-checks the figures below on your machine.

## What was measured

- top-1 {_pct(fig['top1'])} on {fig['test_images']} test images; {fig['params']:,} parameters, {fig['macs']:,} MACs per
  image (theory), {fig['size_bytes']:,} bytes on disk
- latency (median per call): {lat or 'not timed'}; measured on {runtime if runtime in fig['latency'] else 'the runtimes above'}
- machine: {mach.get('cpu') or 'unknown'}, {mach.get('threads')} threads; instruction sets: {has}
- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)}

`bundle.json` holds all of it: the preprocessing, the class names in index order, every figure, the machine and
the sha256 of each file{', and the test images with the answers this bundle gave them' if m.get('test_files') else ''}.
"""
