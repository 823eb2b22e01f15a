"""Deploying what was measured: the bundle format, its torch-free runner (predict, verify) and its preprocessing.

Everything in this package imports only the standard library, numpy, Pillow and ONNX Runtime or OpenVINO: the
whole folder is copied into each bundle (as `compress_deploy/`) and runs on a machine without PyTorch. The harness
imports its decoder and session settings from here, so a bundle is fed and run as the row was measured.
"""

from __future__ import annotations

PACKAGE = "compress_deploy"  # this folder's name inside a bundle
LAUNCHER = '''#!/usr/bin/env python3
"""The class of each image, from this bundle's measured model: python predict.py PATH... [--json] (--help).

Needs numpy, Pillow and onnxruntime (or openvino for an OpenVINO bundle); no PyTorch."""
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
from compress_deploy.runner import main  # noqa: E402

sys.exit(main(bundle_dir=here, prog="predict.py"))
'''
