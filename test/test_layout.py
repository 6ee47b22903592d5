"""The LLM's input layout: the speech embedding scale and logits only where the loss reads them.

Tiny real Gemma 2, Gemma 3 and Llama models (saved with ``save_pretrained``,
loaded by :class:`CausalLLM`): Gemma's embedding layer multiplies token
embeddings by sqrt(hidden), ``inputs_embeds`` are used as given.
"""
from __future__ import annotations

import math
import re

import pytest
import torch

from tiny_setup import PROMPT_TEXT, UTTS

HIDDEN = 32


@pytest.fixture(scope="module")
def llms(tmp_path_factory):
    """arch -> saved tiny LM dir (one char tokenizer for all)."""
    from espnet_llm_asr import tiny_models

    root = tmp_path_factory.mktemp("layout")
    tok = root / "tokenizer"
    tiny_models.train_tokenizer([t for _, _, t, _, _ in UTTS] + PROMPT_TEXT, tok, model_type="char")
    dirs = {}
    for arch in ("gemma2", "gemma3", "llama"):
        dirs[arch] = tiny_models.build_tiny_llm(root / arch, tok, hidden_size=HIDDEN, num_layers=2, num_heads=2,
                                                intermediate_size=64, arch=arch)
    # the same Gemma 3 with a window shorter than a batch: the aligned layout must not be used
    dirs["gemma3_window4"] = tiny_models.build_tiny_llm(root / "gemma3_w4", tok, hidden_size=HIDDEN, num_layers=2,
                                                        num_heads=2, intermediate_size=64, arch="gemma3",
                                                        sliding_window=4,
                                                        layer_types=["sliding_attention", "full_attention"])
    return dirs


def _llm(llms, arch, **conf):
    from espnet_llm_asr.llm import CausalLLM

    return CausalLLM(str(llms[arch]), **conf)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_speech_scale_is_its_embedding_scale_and_text_is_scaled_once(llms, arch):
    from espnet_llm_asr.layout import utterance_pieces

    llm = _llm(llms, arch)
    assert type(llm.model.get_input_embeddings()).__name__.endswith("ScaledWordEmbedding")
    assert llm.speech_scale.mode == "factor"
    assert llm.speech_scale.value == pytest.approx(math.sqrt(HIDDEN), rel=1e-6)

    # text through our inputs_embeds path == the model's own input_ids path
    ids = torch.tensor([llm.tokenize("नमस्ते भारत USER: Transcribe")])
    with torch.no_grad():
        ours = llm(llm.embed(ids), torch.ones_like(ids))
        theirs = llm.model(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)

    # in an utterance: speech positions get the factor, text positions the embedding layer's only
    speech = torch.randn(2, 5, HIDDEN)
    lengths = torch.tensor([5, 3])
    texts = [llm.tokenize("भारत"), llm.tokenize("வணக்கம்")]
    pieces = utterance_pieces(llm, speech, lengths, [None, None], texts)
    table = llm.model.get_input_embeddings().weight.detach()
    for i, piece in enumerate(pieces):
        prefix, suffix = llm.prompt_ids(None)
        n = int(lengths[i])
        torch.testing.assert_close(piece.head[len(prefix):], speech[i, :n] * math.sqrt(HIDDEN))
        tail_ids = suffix + texts[i] + [llm.eos_token_id]
        torch.testing.assert_close(piece.tail, table[tail_ids] * math.sqrt(HIDDEN))
        torch.testing.assert_close(piece.head[: len(prefix)], table[prefix] * math.sqrt(HIDDEN))


def test_llama_is_unchanged_and_a_number_overrides(llms):
    from espnet_llm_asr.layout import utterance_pieces

    llama = _llm(llms, "llama")
    assert str(llama.speech_scale) == "factor:1.0"
    speech = torch.randn(1, 4, HIDDEN)
    piece = utterance_pieces(llama, speech, torch.tensor([4]), [None])[0]
    torch.testing.assert_close(piece.head[len(llama.prompt_ids(None)[0]):], speech[0])

    assert _llm(llms, "gemma3", speech_scale="factor:2.5").speech_scale.value == 2.5
    assert _llm(llms, "gemma3", speech_scale="factor:auto").speech_scale.value == pytest.approx(math.sqrt(HIDDEN))
    for bad in ("big", "factor:big", "factor:0", "factor:-1.0", "factor:inf", "rms:nan", 2.5, "scale:2"):
        with pytest.raises(ValueError, match="llm_conf.speech_scale"):
            _llm(llms, "llama", speech_scale=bad)


def test_speech_scale_rms_gives_every_speech_vector_the_token_embeddings_length(llms):
    from espnet_llm_asr.layout import utterance_pieces

    llm = _llm(llms, "gemma3", speech_scale="rms")
    table = llm.model.get_input_embeddings().weight.detach()
    want = float(table.pow(2).mean().sqrt()) * math.sqrt(HIDDEN)  # the RMS of the scaled token embeddings
    assert llm.speech_scale.mode == "rms" and llm.speech_scale.value == pytest.approx(want, rel=1e-5)
    # vectors of very different lengths, one of them 1000x: all come out at the token RMS, directions kept
    speech = torch.randn(1, 4, HIDDEN) * torch.tensor([0.01, 1.0, 10.0, 1000.0]).view(1, 4, 1)
    speech.requires_grad_(True)
    piece = utterance_pieces(llm, speech, torch.tensor([4]), [None])[0]
    got = piece.head[len(llm.prompt_ids(None)[0]):]
    torch.testing.assert_close(got.pow(2).mean(-1).sqrt(), torch.full((4,), want))
    cos = torch.nn.functional.cosine_similarity(got, speech[0], dim=-1)
    torch.testing.assert_close(cos, torch.ones(4))
    got.sum().backward()  # the projector still learns through the rescaling
    assert torch.isfinite(speech.grad).all() and speech.grad.abs().sum() > 0
    # text positions are untouched
    prefix = llm.prompt_ids(None)[0]
    torch.testing.assert_close(piece.head[: len(prefix)], table[prefix] * math.sqrt(HIDDEN))

    assert str(_llm(llms, "llama", speech_scale="rms:0.5").speech_scale) == "rms:0.5"
    assert _llm(llms, "llama").speech_scale.mode == "factor"


def _model(llms, arch):
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.model import LLMASRModel

    llm = _llm(llms, arch)
    torch.manual_seed(0)
    frontend = FRONTEND_CLASSES["mono"](output_dim=llm.hidden_size, input_dim=8, hidden_dim=16)
    return LLMASRModel(frontend, llm, lang_list=["hi", "ta"]).eval()  # eval: no dropout, same numbers twice


def _reference_loss(model, feats, feats_lengths, texts, langs):
    """Every utterance alone (no padding), the logits of every position: the summed CE / tokens."""
    import torch.nn.functional as F

    from espnet_llm_asr.layout import utterance_pieces

    proj = model.frontend.project(feats, feats_lengths)
    pieces = utterance_pieces(model.llm, proj.embeds, proj.lengths, langs, texts)
    total, count = 0.0, 0
    for piece, ids in zip(pieces, texts):
        seq = torch.cat([piece.head, piece.tail])[None]
        logits = model.llm(seq, torch.ones(seq.shape[:2], dtype=torch.long)).float()
        n = len(ids) + 1
        target = torch.tensor(ids + [model.llm.eos_token_id])
        total = total + F.cross_entropy(logits[0, -n - 1:-1], target, reduction="sum")
        count += n
    return total / count


@pytest.mark.parametrize("arch", ["gemma3", "gemma2", "llama", "gemma3_window4"])
def test_training_loss_and_gradients_equal_each_utterance_alone(llms, arch):
    """Transcript-aligned batch, head on the loss positions only == each utterance alone, all logits;
    and the head really sees only those positions (unless the window forbids the layout)."""
    model = _model(llms, arch)
    llm = model.llm
    texts = [llm.tokenize("नमस्ते भारत"), llm.tokenize("வணக்கம்"), llm.tokenize("भारत")]
    width = max(len(t) for t in texts) + 1
    text = torch.full((3, width - 1), -1, dtype=torch.long)
    for i, t in enumerate(texts):
        text[i, : len(t)] = torch.tensor(t)
    torch.manual_seed(1)
    feats = torch.randn(3, 40, 8)
    feats_lengths = torch.tensor([40, 17, 29])
    lang = torch.tensor([[0], [1], [0]])

    head_rows = []
    hook = llm.model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[1]))
    loss, stats, _ = model(feats, feats_lengths, text, torch.tensor([len(t) for t in texts]), lang)
    hook.remove()
    params = [p for p in model.frontend.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)

    ref = _reference_loss(model, feats, feats_lengths, texts, ["hi", "ta", "hi"])
    ref_grads = torch.autograd.grad(ref, params)
    torch.testing.assert_close(stats["loss_ce"].reshape(()), ref.detach(), rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads)
    if arch == "gemma3_window4":
        assert llm.max_aligned_length == 4 and head_rows[0] > width + 1  # every position
    else:
        assert head_rows == [width + 1]  # only the predictions the loss reads (and one more, dropped)


def test_train_step_benchmark_runs_both_layouts(llms, capsys, monkeypatch):
    """benchmark/train_step: both layouts timed side by side on a tiny Gemma 3, the ratio printed;
    --compare ctc_vocab: the CTC over the whole vocabulary vs over a subset; --compare dtype:
    bfloat16 vs float32, the same projector weights (so nearly the same loss)."""
    from espnet_llm_asr.benchmark import train_step

    common = ["train_step", "--llm", str(llms["gemma3"]), "--dtype", "float32",
              "--projector", "mono", "--hidden_dim", "16", "--encoder_dim", "8",
              "--batch_size", "2", "--seconds", "1", "--tokens", "4", "--repeats", "1", "--ctc_weight", "1.0"]
    monkeypatch.setattr("sys.argv", common)
    train_step.main()
    out = capsys.readouterr().out
    assert "round 1 aligned" in out and "round 1 right_padded" in out
    assert "ratio right_padded / aligned:" in out and "CPU:" in out
    monkeypatch.setattr("sys.argv", common + ["--compare", "ctc_vocab", "--ctc_vocab_size", "12"])
    train_step.main()
    out = capsys.readouterr().out
    assert "round 1 ctc_subset" in out and "round 1 ctc_full" in out
    assert "ratio ctc_full / ctc_subset:" in out and " tokens vs all " in out
    monkeypatch.setattr("sys.argv", common + ["--compare", "dtype"])
    train_step.main()
    out = capsys.readouterr().out
    assert "ratio bfloat16 / float32:" in out and "bf16: " in out
    losses = {way: float(loss) for way, loss in re.findall(r"round 1 (\w+): [\d.]+ s, loss ([\d.]+)", out)}
    assert set(losses) == {"float32", "bfloat16"}
    assert abs(losses["float32"] - losses["bfloat16"]) < 0.05 * losses["float32"]
