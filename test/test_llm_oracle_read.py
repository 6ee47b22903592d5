"""``egs2/indic/asr1/local/llm_oracle_read.py``: the frozen LLM decoding its transcripts' own
token embeddings put in the speech slot, scored by WER, on a tiny Gemma 3 (whose embedding
layer scales by sqrt(hidden), so the slot's scale matters)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tiny_setup import PROMPT_TEXT

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "egs2" / "indic" / "asr1" / "local" / "llm_oracle_read.py"
LANG_INSTRUCTION = " Language: {lang_name}."
UTTS = {  # uttid: (lang, transcript)
    "u1": ("hi", "नमस्ते भारत"),
    "u2": ("ta", "வணக்கம்"),
    "u3": ("hi", "भारत"),
    "u4": ("ta", "வணக்கம் நண்பா"),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A data dir (text, utt2lang) and a tiny random Gemma 3 with a char tokenizer."""
    from espnet_llm_asr import tiny_models

    root = tmp_path_factory.mktemp("oracle_read")
    data = root / "data"
    data.mkdir()
    (data / "text").write_text("".join(f"{u} {t}\n" for u, (_, t) in UTTS.items()), encoding="utf-8")
    (data / "utt2lang").write_text("".join(f"{u} {lg}\n" for u, (lg, _) in UTTS.items()), encoding="utf-8")
    tok = root / "tokenizer"
    tiny_models.train_tokenizer([t for _, t in UTTS.values()] + PROMPT_TEXT + [" Language: Hindi. Tamil."], tok,
                                model_type="char")
    llm = tiny_models.build_tiny_llm(root / "gemma3", tok, hidden_size=32, num_layers=2, num_heads=2,
                                     intermediate_size=64, arch="gemma3")
    return root, data, llm


def _oracle_read(monkeypatch, capsys, llm_dir, data, batch_size):
    """Run the script's main in this process: (REF/HYP pairs it prints, WER %, exact fraction)."""
    spec = importlib.util.spec_from_file_location("llm_oracle_read", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--llm", str(llm_dir), "--data", str(data), "--dtype", "float32",
                                      "--batch_size", str(batch_size), "--lang_instruction", LANG_INSTRUCTION])
    capsys.readouterr()
    module.main()
    out = capsys.readouterr().out
    pairs = re.findall(r"^REF: (.*)\nHYP: (.*)$", out, re.M)
    m = re.search(rf"oracle read of (\d+) utterances of .*: WER ([0-9.]+) %, exact ([0-9.]+)", out)
    assert m, out
    assert int(m.group(1)) == len(UTTS)
    return pairs, float(m.group(2)), float(m.group(3))


def _spy_generate(monkeypatch):
    """Every ``generate`` call of the LLM the script builds: [(kwargs, output ids)]."""
    import espnet_llm_asr.llm as llm_module

    calls = []

    class Spy(llm_module.CausalLLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            real = self.model.generate

            def generate(**kw):
                out = real(**kw)
                calls.append((kw, out))
                return out

            self.model.generate = generate

    monkeypatch.setattr(llm_module, "CausalLLM", Spy)
    return calls


def test_oracle_read_decodes_the_transcripts_own_embeddings(setup, monkeypatch, capsys):
    """What the LLM reads is exactly [prompt before | transcript | prompt after] as its own
    embedding layer embeds their token ids (Gemma's sqrt(hidden) scale included), left padded; the hypotheses
    are its greedy outputs up to EOS and the reported WER and exact rate are theirs."""
    import jiwer

    from espnet_llm_asr.llm import CausalLLM

    _, data, llm_dir = setup
    llm = CausalLLM(str(llm_dir), lang_instruction=LANG_INSTRUCTION)
    assert llm.speech_scale.value == pytest.approx(32 ** 0.5)  # Gemma's: the slot's scale is tested
    calls = _spy_generate(monkeypatch)
    pairs, wer, exact = _oracle_read(monkeypatch, capsys, llm_dir, data, batch_size=3)
    utts = sorted(UTTS)
    refs = [UTTS[u][1] for u in utts]
    assert [r for r, _ in pairs] == refs
    assert [kw["inputs_embeds"].size(0) for kw, _ in calls] == [3, 1]
    inputs = [row for kw, _ in calls for row in zip(kw["inputs_embeds"], kw["attention_mask"])]
    outputs = [row for _, out in calls for row in out.tolist()]
    hyps = []
    for u, (embeds, mask), out in zip(utts, inputs, outputs):
        prefix, suffix = llm.prompt_ids(UTTS[u][0])
        ids = torch.tensor(prefix + llm.tokenize(UTTS[u][1]) + suffix)
        n = len(ids)
        assert mask.tolist() == [0] * (mask.numel() - n) + [1] * n  # left padded
        with torch.no_grad():
            torch.testing.assert_close(embeds[-n:], llm.embed(ids), rtol=1e-5, atol=1e-6)
        eos = llm.eos_token_id
        hyps.append(llm.decode(out[: out.index(eos)] if eos in out else out))
    assert any(hyps)  # a random LM that says something
    assert pairs == list(zip(refs, hyps))
    assert wer == pytest.approx(100 * jiwer.wer(refs, hyps), abs=0.05)
    assert exact == pytest.approx(sum(r == h for r, h in zip(refs, hyps)) / len(refs), abs=5e-4)
    assert wer > 50  # untrained: it does not read the words back


def test_oracle_read_of_an_lm_that_has_learnt_to_repeat(setup, monkeypatch, capsys):
    """An LM trained (by token ids) to say the transcript it was given before the prompt reads
    every utterance back through the script, batched: WER 0, all exact."""
    from espnet_llm_asr.llm import CausalLLM

    root, data, llm_dir = setup
    trained = root / "gemma3_repeats"
    shutil.copytree(llm_dir, trained)
    torch.manual_seed(0)
    llm = CausalLLM(str(trained), lang_instruction=LANG_INSTRUCTION)
    rows, labels = [], []
    for lang, text in UTTS.values():
        prefix, suffix = llm.prompt_ids(lang)
        y = llm.tokenize(text) + [llm.eos_token_id]
        rows.append(prefix + y[:-1] + suffix + y)
        labels.append([-100] * (len(rows[-1]) - len(y)) + y)
    width = max(map(len, rows))
    ids = torch.tensor([r + [llm.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    target = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels])
    model = llm.model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(300):
        loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    model.eval().save_pretrained(trained)

    pairs, wer, exact = _oracle_read(monkeypatch, capsys, trained, data, batch_size=2)
    assert [r for r, _ in pairs] == [UTTS[u][1] for u in sorted(UTTS)]
    assert all(r == h for r, h in pairs), pairs
    assert wer == 0.0 and exact == 1.0
