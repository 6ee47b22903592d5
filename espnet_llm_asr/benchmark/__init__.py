"""Performance benchmark: projector cost, decoding, CIF, dumped features, memory, system level,
GPU throughput.

Driven by ``python -m espnet_llm_asr.bin.benchmark``; every part can run alone
(``--parts``) and ``--quick`` shrinks every size so the whole run takes seconds
(the test uses it).  Results are one JSON-able dict::

    {"meta": {...machine, load, threads, settings...},
     "projectors": {...}, "decoding": {...}, "cif": {...}, "dumped": {...},
     "memory": {...}, "system": {...}, "throughput": {...}, "goals": [...]}

Modules, in import order (each imports only modules listed before it;
:data:`MODULE_ORDER`, checked by ``test/test_benchmark.py``):

* :mod:`.common`: settings, timing, peak-memory and machine/load helpers.
* :mod:`.report`: markdown tables and those of espnet_llm_asr/benchmark/README.md.
* :mod:`.projectors`: part 1, every projector's time, memory and FLOPs.
* :mod:`.assets`: the models and utterances of the ASR parts.
* :mod:`.system`: the system-level estimate of smear_moe over mono (CPU, GPU).
* :mod:`.throughput`: decoding RTFx and the training step at the papers'
  sizes on a GPU (toy sizes on CPU with ``--quick``).
* :mod:`.asr`: parts 2-5, decoding, CIF, dumped features, training memory.
* :mod:`.run`: :data:`PARTS`, :func:`run_benchmark` and the goals.
* :mod:`.train_step`: a real LLM's training step with the output head on the
  loss positions only vs on every position, side by side (its own command).

The methods (best-of-``repeats`` times, resident-set peak memory, FLOP
counting) are described in :mod:`.common` and :mod:`.projectors`.
"""
from __future__ import annotations

from espnet_llm_asr.benchmark.common import BenchSettings
from espnet_llm_asr.benchmark.report import render_markdown, update_readme
from espnet_llm_asr.benchmark.run import PARTS, evaluate_goals, run_benchmark

#: the benchmark modules from the bottom up: a module may import only those before it
MODULE_ORDER = ("common", "report", "projectors", "assets", "system", "throughput", "asr", "run", "train_step")

__all__ = ["MODULE_ORDER", "PARTS", "BenchSettings", "evaluate_goals", "render_markdown", "run_benchmark",
           "update_readme"]
