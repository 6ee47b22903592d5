"""The benchmark command in quick mode: structure and sanity of what it reports.

No timing thresholds here: speed goals are reported by the benchmark itself,
never asserted in a timed test.
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

import espnet_llm_asr.benchmark as benchmark_pkg
from espnet_llm_asr.benchmark import MODULE_ORDER
from espnet_llm_asr.benchmark.common import QUICK_SIZES
from espnet_llm_asr.benchmark.projectors import (PROJECTOR_ROWS, NaiveSmear, build_benchmark_projectors,
                                                 projector_inputs)
from espnet_llm_asr.benchmark.report import README_BEGIN, README_END, update_readme


@pytest.fixture
def one_thread():
    """Toy sizes run fastest on one thread (and leave the other core to other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _benchmark_imports(path: Path) -> set:
    """Benchmark modules that the module at ``path`` imports anywhere in it (module level or in
    functions), absolute or relative; ``"__init__"`` for the package itself."""
    pkg = "espnet_llm_asr.benchmark"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package (modules of it sit one level down)
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # "from pkg import x" may name a submodule x
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == pkg:
                found.add("__init__")
            elif name.startswith(pkg + "."):
                sub = name[len(pkg) + 1:].split(".")[0]
                if (path.parent / f"{sub}.py").exists():
                    found.add(sub)
    found.discard(path.stem)
    return found


def test_benchmark_import_direction():
    """The benchmark modules import each other in one direction only: each imports only
    modules before it in MODULE_ORDER (the package __init__ sits on top), so no cycle."""
    pkg_dir = Path(benchmark_pkg.__file__).parent
    modules = sorted(p.stem for p in pkg_dir.glob("*.py") if p.stem != "__init__")
    assert sorted(MODULE_ORDER) == modules, "every benchmark module has its place in MODULE_ORDER"
    rank = {m: i for i, m in enumerate(MODULE_ORDER)}
    rank["__init__"] = len(MODULE_ORDER)
    graph = {m: _benchmark_imports(pkg_dir / f"{m}.py") for m in rank}
    for mod, deps in graph.items():
        above = sorted(d for d in deps if rank[d] >= rank[mod])
        assert not above, f"benchmark/{mod}.py imports {above}, which are not below it in MODULE_ORDER"
    # acyclic (implied by the order, checked on its own): depth-first search for a back edge
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            assert state.get(d) != "open", f"import cycle: {' -> '.join(stack + [m, d])}"
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
    # the old top-level modules are gone
    for old in ("benchmark.py", "benchmark_asr.py", "benchmark_system.py"):
        assert not (pkg_dir.parent / old).exists(), old


def test_naive_smear_loop_equals_merged():
    """The per-utterance loop computes exactly what the batched merge computes."""
    projs = build_benchmark_projectors(QUICK_SIZES)
    inputs = projector_inputs(QUICK_SIZES, 4.0)
    lengths = torch.tensor([50, 31, 7, 50])
    merged, loop = projs["smear_moe"].eval(), projs["smear naive: loop over utterances"].eval()
    assert isinstance(loop, NaiveSmear) and loop.base is merged
    with torch.no_grad():
        a = merged(inputs["feats"], lengths)
        b = loop(inputs["feats"], lengths)
    assert torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.embeds, b.embeds, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_quick_benchmark_all_parts(tmp_path, one_thread):
    from espnet_llm_asr.bin.benchmark import main

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n\ntext\n\n## Next\n\nmore\n", encoding="utf-8")
    out_json = tmp_path / "bench.json"
    res = main(["--quick", "--repeats", "1", "--num_utts", "4", "--work_dir", str(tmp_path / "work"),
                "--out_json", str(out_json), "--readme", str(readme)])
    assert json.loads(out_json.read_text(encoding="utf-8"))["meta"]["torch_threads"] == 1
    meta = res["meta"]
    assert meta["loadavg_start"] is not None and meta["settings"]["quick"] is True

    # 1. projectors: every row, positive times, ratios to mono
    rows = res["projectors"]["rows"]
    assert list(rows) == [r for r, _, _ in PROJECTOR_ROWS]
    for name, r in rows.items():
        assert r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 and r["fwd_ratio"] > 0 and r["fwd_bwd_ratio"] > 0, name
        assert r["fwd_flops"] > 0 and r["fwd_bwd_flops"] > r["fwd_flops"], name
    assert rows["mono"]["fwd_ratio"] == 1.0
    stride5 = math.ceil(QUICK_SIZES.frames / 5)
    for name in ("mono", "smear_moe", "dense", "hard_moe (top-2)", "smear naive: all experts, then mix",
                 "smear_moe, weights merged (merge_mode: merge)", "smear_moe, layer outputs mixed (merge_mode: mix)"):
        assert rows[name]["positions_per_utt"] == stride5
    # SMEAR's exact formulations: mixing runs every expert (E times the matmul work); auto merges here
    mix, merge = rows["smear_moe, layer outputs mixed (merge_mode: mix)"], rows["smear_moe, weights merged (merge_mode: merge)"]
    assert mix["fwd_flops"] > merge["fwd_flops"] == rows["smear_moe"]["fwd_flops"]
    # running every expert costs E times one expert's MLP: more FLOPs than the merged SMEAR
    assert rows["smear naive: all experts, then mix"]["fwd_flops"] > rows["smear_moe"]["fwd_flops"]
    assert rows["smear_moe (1 expert)"]["params"] < rows["smear_moe"]["params"]

    # 2. decoding: same hypotheses at every batch size
    dec = res["decoding"]
    assert set(dec["batches"]) == {"1", "8", "16"}
    assert dec["hypotheses_equal"] is True
    assert all(b["same_as_batch1"] and b["utt_per_s"] > 0 and b["rtf"] > 0 for b in dec["batches"].values())
    assert len({b["tokens"] for b in dec["batches"].values()}) == 1
    assert dec["mono_vs_smear"]["ratio"] > 0

    # 3. CIF: stride-5 positions are ceil(frames / 5) per utterance
    cif = res["cif"]
    first = next(iter(cif["rows"].values()))
    assert first["positions"] == cif["stride5_expected"]
    assert all(r["positions"] > 0 for r in cif["rows"].values())
    assert cif["quantity_loss_first_last"][1] < cif["quantity_loss_first_last"][0]
    assert cif["decode_ratio"] > 0

    # 4. dumped features: encoder share in [0, 1)
    for key in ("tiny", "large_v3"):
        r = res["dumped"][key]
        assert r["dumped_s"] > 0 and r["on_the_fly_s"] > 0 and 0 <= r["encoder_share"] < 1
    assert res["dumped"]["large_v3"]["encoder"]["target_layers"] > res["dumped"]["large_v3"]["encoder"]["layers_run"]

    # 5. memory: a real training run, trainable-only checkpoint
    mem = res["memory"]
    assert mem["peak_rss_bytes"] > 0 and mem["trainable_bytes"] > 0
    assert mem["trainable_not_saved"] == []
    assert 0.9 < mem["checkpoint_ratio"] < 2

    # system level and goals
    assert res["system"]["smear_over_mono"] > 0 and res["system"]["device"] == "cpu"
    goals = {g["goal"]: g for g in res["goals"]}
    assert len(goals) == 11 and all(g["measured"] is not None for g in goals.values())

    # 6. the GPU throughput part, run on CPU at toy sizes: every row measured, the same
    # hypotheses count in the static and dynamic greedy rows, a training step breakdown
    thr = res["throughput"]
    assert thr["device"] == "cpu" and thr["dtype"] == "float32"
    rows = {r["label"]: r for r in thr["decoding"]}
    batches = thr["sizes"]["batches"]
    assert {(r["batch"], r["num_beams"], r["cache"]) for r in rows.values()} == (
        {(b, n, "static") for b in batches for n in (1, 4)} | {(batches[1], 1, "dynamic")})
    for r in rows.values():
        assert r["error"] is None and r["seconds"] > 0 and r["rtfx"] > 0 and r["compiled"] is False, r
        assert 0 < r["tokens"] <= r["batch"] * thr["sizes"]["new_tokens"]
    assert thr["largest_batch"]["batch"] == max(thr["sizes"]["search_batches"])
    for name in ("on_the_fly", "dumped"):
        step = thr["training"][name]
        assert step["batch"] == 7 and step["step_s"] > 0 and math.isfinite(step["loss"])
        parts = ("encoder_s", "projector_fwd_s", "llm_fwd_loss_s", "backward_s", "optimizer_s")
        assert step["step_s"] == pytest.approx(sum(step[p] for p in parts), rel=1e-6)
    assert thr["training"]["on_the_fly"]["encoder_s"] > 0 == thr["training"]["dumped"]["encoder_s"]
    assert "**6. GPU throughput** on cpu" in readme.read_text(encoding="utf-8")

    # README: the section sits between the markers, after Results, and is regenerated in place
    text = readme.read_text(encoding="utf-8")
    assert text.index("## Results") < text.index("## Performance") < text.index(README_BEGIN) < text.index("## Next")
    assert "| mono |" in text
    update_readme(str(readme), "regenerated\n")
    text2 = readme.read_text(encoding="utf-8")
    assert text2.count(README_BEGIN) == 1 and "regenerated" in text2 and "| mono |" not in text2
    assert text2.endswith("## Next\n\nmore\n")


def test_throughput_part_without_gpu_is_skipped_and_reported():
    """On CPU without --quick the GPU part says it needs a GPU; its goals read "not measured"."""
    from espnet_llm_asr.benchmark.common import BenchSettings
    from espnet_llm_asr.benchmark.report import render_markdown
    from espnet_llm_asr.benchmark.run import evaluate_goals
    from espnet_llm_asr.benchmark.throughput import bench_throughput

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the part would run at the papers' sizes")
    res = bench_throughput(BenchSettings(quick=False))
    assert "needs a GPU" in res["skipped"]
    goals = evaluate_goals({"throughput": res})
    assert len(goals) == 3 and all(g["measured"] is None and g["met"] is None for g in goals)
    meta = {"cpu": "x", "cores": 2, "torch": "t", "torch_threads": 1, "settings": {"repeats": 1, "quick": False}}
    text = render_markdown({"meta": meta, "throughput": res, "goals": goals})
    assert "**6. GPU throughput**: not measured (needs a GPU" in text and "| not measured |" in text


def test_benchmark_cli_throughput_settings(monkeypatch):
    """--throughput_batches / --throughput_budget_s / --compile_decoding reach BenchSettings; bad
    batch lists are argparse errors."""
    from espnet_llm_asr.bin import benchmark

    seen = {}

    def fake_run(parts, settings):
        seen["parts"], seen["settings"] = parts, settings
        return {"meta": {"cpu": "x", "cores": 2, "torch": "t", "torch_threads": 1,
                         "settings": {"repeats": 1, "quick": True}}}

    monkeypatch.setattr(benchmark, "run_benchmark", fake_run)
    benchmark.main(["--parts", "throughput", "--throughput_batches", "1,16,128", "--throughput_budget_s", "90",
                    "--compile_decoding", "false"])
    settings = seen["settings"]
    assert seen["parts"] == ["throughput"]
    assert settings.throughput_batches == (1, 16, 128) and settings.throughput_budget_s == 90.0
    assert settings.compile_decoding is False
    benchmark.main(["--parts", "throughput"])
    assert seen["settings"].throughput_batches == (1, 8, 64) and seen["settings"].compile_decoding is None
    for bad in ("0,8", "a,b", ""):
        with pytest.raises(SystemExit):
            benchmark.main(["--throughput_batches", bad])


def test_throughput_report_of_a_gpu_run_with_failures():
    """What a GPU run reports when configurations fail (out of memory) or the time budget ends:
    rendered rows, the largest batch that fit, the goals from the fast greedy rows."""
    from espnet_llm_asr.benchmark.report import render_markdown
    from espnet_llm_asr.benchmark.run import evaluate_goals

    def row(label, batch, beams=1, cache="static", rtfx=100.0, error=None):
        if error:
            return {"label": label, "batch": batch, "num_beams": beams, "cache": cache, "error": error}
        return {"label": label, "batch": batch, "num_beams": beams, "cache": cache, "compiled": True,
                "seconds": 1.0, "first_call_s": 30.0, "rtfx": rtfx, "rtf": 1 / rtfx, "tokens": 40 * batch,
                "tokens_per_s": 40.0 * batch, "peak_bytes": 20 * 2**30, "error": None}

    step = {"encoder_s": 0.05, "projector_fwd_s": 0.01, "llm_fwd_loss_s": 0.1, "backward_s": 0.08,
            "optimizer_s": 0.01, "step_s": 0.25, "loss": 12.0, "batch": 7, "peak_bytes": 38 * 2**30}
    thr = {"device": "NVIDIA H200", "dtype": "bfloat16", "attn_implementation": "eager",
           "sizes": {"encoder": {"d_model": 1280, "encoder_layers": 32},
                     "llm": {"hidden_size": 3584, "layers": 42, "vocab_size": 256000},
                     "projector": "smear_moe", "audio_s": 10.0, "new_tokens": 40, "batches": (1, 8, 64),
                     "pad_to_30s": True},
           "fast_decode": {"cache_implementation": "static", "length_multiple": 16},
           "decoding": [row("greedy, batch 1", 1, rtfx=31.0), row("greedy, batch 8", 8),
                        row("greedy, batch 64", 64, error="out of memory"),
                        row("beam 4, batch 1", 1, 4, error="skipped: time budget")],
           "largest_batch": {"batch": 8, "rtfx": 100.0, "peak_bytes": 2**30,
                             "tried": [{"batch": 128, "rtfx": None, "error": "out of memory"}],
                             "stopped": "out of memory"},
           "training": {"on_the_fly": step, "dumped": dict(step, encoder_s=0.0, step_s=0.2)}}
    goals = {g["goal"]: g for g in evaluate_goals({"throughput": thr})}
    assert goals["greedy RTFx at batch 64 (10 s utterances, papers' sizes)"]["measured"] is None  # its row failed
    assert goals["greedy RTFx at batch 1"]["met"] is True
    assert goals["training step at batch 7, on-the-fly encoding (s)"]["met"] is False
    meta = {"cpu": "x", "cores": 2, "torch": "t", "torch_threads": 1, "gpu": "NVIDIA H200",
            "settings": {"repeats": 1, "quick": False}}
    text = render_markdown({"meta": meta, "throughput": thr, "goals": list(goals.values())})
    assert "**6. GPU throughput** on NVIDIA H200" in text and "(pad_to_30s)" in text
    assert "| greedy, batch 64 | 64 | 1 | static | – | – | – | – | – | out of memory |" in text
    assert "Largest greedy batch that fit: 8" in text and "128: out of memory" in text
    assert "| on-the-fly encoding | 0.050 |" in text and "**0.250**" in text
