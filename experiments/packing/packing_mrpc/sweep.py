"""Packed vs padded fine-tuning with dropout on, MRPC: see experiments/packing/sweep.py.

  bertlab sweep experiments/packing/packing_mrpc && bertlab report experiments/packing/packing_mrpc
"""

import importlib.util
import os

_SPEC = importlib.util.spec_from_file_location(
    "packing_sweep", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "sweep.py"))
_BASE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_BASE)


def get_study():
    return _BASE.study("mrpc", 1024, "f1", epochs=2)
