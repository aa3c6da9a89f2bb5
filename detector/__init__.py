"""GoogLeNet R-CNN detector (ILSVRC 2014, "Going Deeper with Convolutions", section 8).

One process-level setting is made on import, before anything here can import ONNX Runtime:
``ORT_DISABLE_TELEMETRY=1`` (unless the user set the variable). ONNX Runtime 1.32's Linux wheels start a
telemetry thread on ``import onnxruntime`` that calls libc ``rand()`` every 5-9 s. Selective Search ranks
its boxes with that same process-wide ``rand()`` stream (see ``proposals/selective_search.py``), so a call
from that thread during ``process()`` reorders the boxes: measured with an ``LD_PRELOAD`` counter on
``rand`` over the whole test suite, it was the only caller besides OpenCV, and it made serial and
worker-process proposals differ in ~3% of full test runs. With the variable set, the thread is never
started. This tool also runs offline, so nothing is lost.
"""
import os as _os
import sys as _sys

ORT_IMPORTED_FIRST = "onnxruntime" in _sys.modules  # too late to stop its thread: selective_search warns
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
