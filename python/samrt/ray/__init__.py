"""``samrt segment`` at dataset scale, on a Ray cluster (``pip install 'samrt[ray]'``).

:func:`segment_dataset` runs what ``samrt segment`` runs, with the same options and the same
output files, as a Ray Data pipeline: image files are read as bytes by tasks that take no
CPU, an actor pool segments them (each actor loads the engine once, with ONNX Runtime's
threads set to the CPUs Ray gave it) and writes each image's outputs atomically, and the
driver tallies what came back (a few numbers per image: masks never travel through the
object store). Up-to-date outputs are skipped before anything is scheduled, so a run
interrupted at any point is finished by running it again.

Importing this module imports Ray; ``samrt`` itself never does.
"""

from __future__ import annotations

from ._pipeline import REPORT_FILE, ActorStartError, SegmentActor, connect, segment_dataset

__all__ = ["REPORT_FILE", "ActorStartError", "SegmentActor", "connect", "segment_dataset"]
