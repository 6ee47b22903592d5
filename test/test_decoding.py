"""Joint CTC / LLM decoding: the CTC prefix scores added to the LLM's by a logits processor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from espnet_llm_asr.ctc_prefix_scoring import CTCPrefixScoring

BLANK, EOS, V = 0, 1, 6


def _ctc_log_probs(seed: int, frames: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, V, generator=g).mul(2).log_softmax(-1).numpy()


def _ctc_log_likelihood(x: np.ndarray, labels) -> float:
    """log P_CTC(labels | x) by torch's own CTC loss (an independent implementation)."""
    lp = torch.from_numpy(x)[:, None]  # (T, 1, V)
    loss = F.ctc_loss(lp, torch.tensor([labels]), torch.tensor([x.shape[0]]), torch.tensor([len(labels)]),
                      blank=BLANK, reduction="sum")
    return -float(loss)


@pytest.mark.parametrize("labels", [[2, 3, 4], [3, 3], [5]])
def test_ctc_increments_sum_to_the_ctc_likelihood(labels):
    """With weight 1 the LLM is ignored and the joint scores along a hypothesis, EOS
    included, add up to log P_CTC(hypothesis), as torch's CTC loss computes it
    (repeated labels, which CTC must separate by a blank, included)."""
    x = _ctc_log_probs(0, frames=7)
    proc = CTCPrefixScoring([x], num_beams=1, weight=1.0, blank=BLANK, eos=EOS)
    llm_logits = torch.randn(1, V)
    total = 0.0
    for step, c in enumerate(labels + [EOS]):
        joint = proc(torch.tensor([labels[:step]], dtype=torch.long).view(1, step), llm_logits)
        total += float(joint[0, c])
    assert total == pytest.approx(_ctc_log_likelihood(x, labels), abs=1e-3)


def test_weight_mixes_llm_and_ctc_and_zero_weight_is_the_llm():
    x = _ctc_log_probs(1, frames=5)
    logits = torch.randn(2, V)
    empty = torch.zeros(2, 0, dtype=torch.long)
    llm = torch.log_softmax(logits, -1)
    zero = CTCPrefixScoring([x], num_beams=2, weight=0.0, blank=BLANK, eos=EOS)(empty, logits)
    ctc = CTCPrefixScoring([x], num_beams=2, weight=1.0, blank=BLANK, eos=EOS)(empty, logits)
    half = CTCPrefixScoring([x], num_beams=2, weight=0.5, blank=BLANK, eos=EOS)(empty, logits)
    keep = torch.arange(V) != BLANK  # the blank is never a candidate of the CTC
    assert torch.allclose(zero[:, keep], llm[:, keep])
    assert torch.allclose(half[:, keep], 0.5 * llm[:, keep] + 0.5 * ctc[:, keep], atol=1e-5)
    assert torch.isinf(ctc[:, BLANK]).all() or (ctc[:, BLANK] < -1e6).all()
    # both beams of the one utterance see the same CTC scores
    assert torch.allclose(ctc[0], ctc[1])


def test_ctc_steers_greedy_choice_and_pre_beam_limits_it():
    """A CTC certain of 4, 2 overrides an LLM that prefers 3; with a pre-beam of 1
    only the LLM's best token is a candidate, and every other token is -inf."""
    x = np.full((4, V), -20.0, dtype=np.float32)
    for t, c in enumerate([4, BLANK, 2, BLANK]):
        x[t, c] = 0.0
    logits = torch.zeros(1, V)
    logits[0, 3] = 2.0
    proc = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS)
    prefix = []
    for _ in range(3):
        joint = proc(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)), logits)
        prefix.append(int(joint.argmax()))
    assert prefix == [4, 2, EOS]
    narrow = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS, pre_beam=1)
    joint = narrow(torch.zeros(1, 0, dtype=torch.long), logits)
    assert int(joint.argmax()) == 3 and torch.isinf(joint[0, [0, 1, 2, 4, 5]]).all()


def test_utterance_without_vectors_keeps_llm_scores_and_bad_options_fail():
    logits = torch.randn(1, V)
    proc = CTCPrefixScoring([np.zeros((0, V), dtype=np.float32)], num_beams=1, weight=0.5, blank=BLANK, eos=EOS)
    assert torch.allclose(proc(torch.zeros(1, 0, dtype=torch.long), logits), torch.log_softmax(logits, -1))
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        CTCPrefixScoring([], num_beams=1, weight=1.5, blank=BLANK, eos=EOS)
    with pytest.raises(ValueError, match="ctc_pre_beam"):
        CTCPrefixScoring([], num_beams=1, weight=0.5, blank=BLANK, eos=EOS, pre_beam=0)


def test_every_recipe_decoding_config_parses():
    """The recipe's decoding configs hold only known options, with a valid ctc_weight;
    the shipped default decodes jointly, conf/decode_llm.yaml with the LLM alone."""
    from pathlib import Path

    from espnet_llm_asr.bin.llm_asr_inference import parse_args

    conf = Path(__file__).resolve().parents[1] / "egs2" / "indic" / "asr1" / "conf"
    configs = sorted(conf.glob("decode*.yaml")) + sorted(conf.glob("*/decode*.yaml"))
    assert conf / "decode.yaml" in configs and len(configs) >= 4
    weights = {}
    for path in configs:
        args = parse_args(["--config", str(path), "--output_dir", "x",
                           "--data_path_and_name_and_type", "wav.scp,speech,sound"])
        assert 0.0 <= args.ctc_weight <= 1.0, path
        weights[path.name if path.parent == conf else f"{path.parent.name}/{path.name}"] = args.ctc_weight
    assert weights["decode.yaml"] > 0 and weights["decode_llm.yaml"] == 0
    assert weights["decode_paper.yaml"] == 0  # the papers' configs train no CTC


# ---------------------------------------------------------------- the pre-beam
def _peaked_ctc(frames: int, spoken, vocab: int, blank: int = BLANK, ambiguous=None) -> np.ndarray:
    """(frames, vocab) CTC log-probabilities saying ``spoken`` token by token, a blank between:
    0.9 on the frame's label, the rest spread; ``ambiguous`` {frame: (token, prob)} takes that
    much from the frame's label for a rival."""
    p = np.full((frames, vocab), 0.1 / (vocab - 1), dtype=np.float64)
    labels = [blank] * frames
    for i, c in enumerate(spoken):
        labels[2 * i + 1] = c
    for t, c in enumerate(labels):
        p[t, c] = 0.9
    for t, (c, q) in (ambiguous or {}).items():
        p[t, c], p[t, labels[t]] = p[t, c] + q, p[t, labels[t]] - q
    return np.log(p / p.sum(1, keepdims=True)).astype(np.float32)


def _greedy(proc, logits, steps: int):
    """Greedy decoding of a fixed LLM (the same logits each step) through ``proc``: ids and joint scores."""
    prefix, scores = [], []
    for _ in range(steps):
        joint = proc(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)), logits)
        prefix.append(int(joint.argmax()))
        scores.append(joint[0].clone())
        if prefix[-1] == EOS:
            break
    return prefix, scores


def test_auto_pre_beam_scores_the_llms_best_the_ctcs_choices_and_eos():
    """The default (pre_beam None) scores the LLM's auto_pre_beam best, the CTC's choices (each
    frame's likeliest token but the blank, any with >= 1 % in some frame: here the spoken tokens
    and a rival) and EOS: far fewer than the vocabulary, with the very scores of the full scoring
    on those; the CTC steers to its tokens although the LLM ranks them last, which the LLM's best
    alone (pre_beam 20) cannot."""
    from espnet_llm_asr.ctc_prefix_scoring import CTC_PRE_BEAM_ALL, auto_pre_beam

    vocab = 300
    logits = torch.linspace(5.0, -5.0, vocab)[None]  # the LLM prefers low ids, EOS (1) second
    spoken = [290, 250, 295]
    x = _peaked_ctc(8, spoken, vocab, ambiguous={3: (260, 0.3)})
    auto = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS)
    full = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS, pre_beam=CTC_PRE_BEAM_ALL)
    hyp, scores = _greedy(auto, logits, 6)
    full_hyp, full_scores = _greedy(full, logits, 6)
    assert hyp == full_hyp == spoken + [EOS]
    expected = sorted(set(range(auto_pre_beam(1))) - {BLANK} | {250, 260, 290, 295})
    assert auto.candidates(torch.log_softmax(logits[0], -1), 0).tolist() == expected
    for step, (s, f) in enumerate(zip(scores, full_scores)):
        scored = torch.isfinite(s)
        assert scored.sum() == len(expected), step
        torch.testing.assert_close(s[scored], f[scored])
    assert auto.scored < full.scored / 5
    llm_best = CTCPrefixScoring([x], num_beams=1, weight=0.7, blank=BLANK, eos=EOS, pre_beam=20)
    assert _greedy(llm_best, logits, 6)[0][0] not in spoken


def test_ctc_over_its_own_units_equals_the_ctc_spread_over_the_vocabulary():
    """unit_ids (a ctc_vocab): the scorer reads (T, K) log-probabilities of K units; the joint
    scores, repeated tokens and tokens outside the units included, are those of the same CTC
    spread over the vocabulary (OUTSIDE_LOG_PROB elsewhere)."""
    from espnet_llm_asr.ctc_vocab import OUTSIDE_LOG_PROB
    from espnet_llm_asr.ctc_prefix_scoring import CTC_PRE_BEAM_ALL

    vocab, units = 12, [7, BLANK, 3, 9, 4]  # any order, the blank among them
    g = torch.Generator().manual_seed(3)
    small = torch.randn(9, len(units), generator=g).mul(2).log_softmax(-1).numpy()
    spread = np.full((9, vocab), OUTSIDE_LOG_PROB, dtype=np.float32)
    spread[:, units] = small
    logits = torch.randn(1, vocab, generator=g)
    for pre_beam in (None, CTC_PRE_BEAM_ALL):
        ours = CTCPrefixScoring([small], 1, 0.6, BLANK, EOS, pre_beam=pre_beam, unit_ids=units)
        ref = CTCPrefixScoring([spread], 1, 0.6, BLANK, EOS, pre_beam=pre_beam)
        for prefix in ([], [3], [3, 3], [3, 9], [3, 9, 5], [7, 4, 4]):
            ids = torch.tensor([prefix], dtype=torch.long).view(1, len(prefix))
            a, b = ours(ids, logits), ref(ids, logits)
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), (pre_beam, prefix)
            torch.testing.assert_close(a[torch.isfinite(a)], b[torch.isfinite(b)], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="blank"):
        CTCPrefixScoring([small], 1, 0.6, blank=5, eos=EOS, unit_ids=units)


# ------------------------------------------------- joint decoding in the model (tiny real LLMs)
@pytest.fixture(scope="module")
def llm_dirs(tmp_path_factory):
    """Tiny Llama LMs over a char tokenizer: its own vocabulary (about a hundred pieces), and one
    with Gemma 3's 262,144-word head and embedding table (hidden size 16, one layer)."""
    from tiny_setup import PROMPT_TEXT, TINY_LLM, UTTS

    from espnet_llm_asr import tiny_models

    root = tmp_path_factory.mktemp("joint_decoding")
    tok = tiny_models.train_tokenizer([t for _, _, t, _, _ in UTTS] + PROMPT_TEXT, root / "tok", model_type="char")
    small = tiny_models.build_tiny_llm(root / "llm", tok, **TINY_LLM)
    big = tiny_models.build_tiny_llm(root / "llm_262k", tok, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32, vocab_size=262144)
    return small, big


def _joint_model(llm_dir):
    """LLMASRModel reading (B, T, 8) features through a linear projector (5 frames a vector),
    trained with a CTC (model_conf.ctc_weight 1), untrained here."""
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel

    torch.manual_seed(0)
    llm = CausalLLM(str(llm_dir))
    frontend = FRONTEND_CLASSES["linear"](output_dim=llm.hidden_size, input_dim=8, hidden_dim=16)
    return LLMASRModel(frontend, llm, ctc_weight=1.0).eval()


def _hear(model, monkeypatch, spoken):
    """The model's CTC hears ``spoken`` (LLM ids) in every utterance (:func:`_peaked_ctc`)."""
    real = model.ctc_log_probs

    def crafted(embeds, over_vocab=True):
        batch, frames, vocab = real(embeds, over_vocab).shape
        x = torch.from_numpy(_peaked_ctc(frames, spoken, vocab, blank=model.llm.pad_token_id))
        return x.expand(batch, frames, vocab).clone()

    monkeypatch.setattr(model, "ctc_log_probs", crafted)


def _spy_scorers(monkeypatch):
    """The CTCPrefixScoring processors that generate makes, as it makes them."""
    import espnet_llm_asr.model as model_module

    made = []

    class Spy(CTCPrefixScoring):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(model_module, "CTCPrefixScoring", Spy)
    return made


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 60, 8, generator=g), torch.tensor([60, 45])  # 12 and 9 projected vectors


def test_joint_decoding_default_pre_beam_equals_full_scoring_on_a_toy_vocabulary(llm_dirs, monkeypatch):
    """On the tiny LLM's own vocabulary, where every token can be scored: the default pre-beam
    gives the hypotheses and scores of scoring every token (greedy and beam search), the CTC's
    tokens included although the LLM does not rank them first (its 1 best alone misses them),
    at a fraction of the candidates."""
    from espnet_llm_asr.ctc_prefix_scoring import CTC_PRE_BEAM_ALL

    model = _joint_model(llm_dirs[0])
    vocab = model.llm.model.get_output_embeddings().weight.size(0)
    spoken = model.llm.tokenize("भारत")[1:]  # its letters (after the word boundary)
    assert vocab > 60 and len(spoken) == 4
    _hear(model, monkeypatch, spoken)
    made = _spy_scorers(monkeypatch)
    feats, lengths = _features()
    conf = dict(max_new_tokens=6, ctc_weight=0.9)
    for beams in (1, 2):
        hyps, scores, _ = model.generate(feats, lengths, None, num_beams=beams, **conf)
        full, full_scores, _ = model.generate(feats, lengths, None, num_beams=beams, ctc_pre_beam=CTC_PRE_BEAM_ALL,
                                              **conf)
        assert hyps == full == [spoken, spoken], beams
        np.testing.assert_allclose(scores, full_scores, rtol=1e-5)
        assert made[-2].scored < made[-1].scored / 2
    llm_best, _, _ = model.generate(feats, lengths, None, ctc_pre_beam=1, **conf)
    assert llm_best[0] != spoken


def test_joint_decoding_at_a_262144_word_head_costs_about_greedy(llm_dirs, monkeypatch):
    """A 262,144-word head (Gemma 3's): joint decoding with the default pre-beam scores a few
    dozen candidates a step, not the vocabulary, and finishes about as fast as greedy (times
    printed, not asserted); the CTC still steers to tokens anywhere in the vocabulary."""
    import time

    from espnet_llm_asr.ctc_prefix_scoring import auto_pre_beam

    model = _joint_model(llm_dirs[1])
    assert model.llm.model.get_output_embeddings().weight.size(0) == 262144
    made = _spy_scorers(monkeypatch)
    feats, lengths = _features(1)
    start = time.perf_counter()
    greedy, _, _ = model.generate(feats, lengths, None, max_new_tokens=8)
    greedy_s = time.perf_counter() - start
    start = time.perf_counter()
    joint, scores, _ = model.generate(feats, lengths, None, max_new_tokens=8, ctc_weight=0.5)
    joint_s = time.perf_counter() - start
    print(f"262,144-word head, 2 utterances, 8 new tokens: greedy {greedy_s:.2f} s, joint CTC {joint_s:.2f} s "
          f"({made[-1].scored} candidates scored)")
    assert all(np.isfinite(scores)) and all(len(h) <= 8 for h in joint)
    choices = max(len(c) for c in made[-1].ctc_choices)  # at most one a frame and 100 a frame >= 1 %
    # 2 rows x (8 tokens + the EOS forced at the cap) steps
    assert made[-1].scored <= 2 * (8 + 1) * (auto_pre_beam(1) + 1 + choices) and choices <= 12 * 101

    spoken = [200000, 131072, 262143]
    _hear(model, monkeypatch, spoken)
    hyps, _, _ = model.generate(feats, lengths, None, max_new_tokens=8, ctc_weight=0.9)
    assert hyps == [spoken, spoken]


# ------------------------------------------------------ the prefix score itself, and a character CTC
def test_prefix_extension_equals_espnets_ctc_prefix_score():
    """extend_prefixes (one state per candidate) gives ESPnet's CTCPrefixScore's prefix scores and
    states (the repeated label, which needs a blank between, included), from several prefixes."""
    from espnet.nets.ctc_prefix_score import CTCPrefixScore

    from espnet_llm_asr.ctc_prefix_scoring import UtteranceCTC, extend_prefixes

    x = _ctc_log_probs(4, frames=9)
    ref = CTCPrefixScore(x, BLANK, EOS, np)
    ours = UtteranceCTC(x, BLANK)
    r_ref, state, prefix = ref.initial_state(), ours.initial_state, []
    cand = np.array([2, 3, 4, 5])
    for label in [3, 3, 5]:
        psi_ref, states_ref = ref([-1] + prefix, cand, r_ref)
        n = len(cand)
        psi, r = extend_prefixes(x, BLANK, np.broadcast_to(state.r, (n,) + state.r.shape).copy(),
                                 np.full(n, not prefix), np.full(n, prefix[-1] if prefix else -1), cand)
        np.testing.assert_allclose(psi, psi_ref, rtol=1e-5, atol=1e-4)
        reached = np.isfinite(r) & (r > -1e9) & (states_ref > -1e9)  # ESPnet leaves early frames unset
        np.testing.assert_allclose(r[reached], states_ref[reached], rtol=1e-5, atol=1e-4)
        j = int(np.nonzero(cand == label)[0][0])
        r_ref, state, prefix = states_ref[j], ours.extend(state, [(label,)])[0], prefix + [label]


def test_character_ctc_scores_a_token_by_the_letters_it_adds(tmp_path):
    """With a character CTC (``speller``) and weight 1, the joint scores of a hypothesis of
    multi-letter tokens, EOS included, add up to log P_CTC(its spelling) (torch's CTC loss): a
    token adds its letters (a word-initial one the word boundary first), a bare word boundary the
    boundary, a second one nothing; a special token scores as outside the CTC."""
    from espnet_llm_asr import tiny_models
    from espnet_llm_asr.ctc_vocab import CharSpeller
    from espnet_llm_asr.ctc_prefix_scoring import CTC_PRE_BEAM_ALL
    from espnet_llm_asr.ctc_vocab import OUTSIDE_LOG_PROB, char_piece_ids, word_boundary_id

    sentences = ["राम का घर", "घर का काम", "राम काम कर", "कर का राम"] * 5
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models.train_tokenizer(sentences, tmp_path / "tok", vocab_size=60,
                                                                        model_type="bpe")))
    speller = CharSpeller(tok, boundary=word_boundary_id(tok))
    units = sorted(set(char_piece_ids(tok, "रामकघर")) | {word_boundary_id(tok), tok.pad_token_id})
    blank, eos, vocab = tok.pad_token_id, tok.eos_token_id, len(tok)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, len(units), generator=g).mul(2).log_softmax(-1).numpy()
    logits = torch.randn(1, vocab, generator=g)
    bare = tok.convert_tokens_to_ids("▁")
    words = tok("राम का घर", add_special_tokens=False)["input_ids"]
    assert any(len(tok.decode([t]).strip()) > 1 for t in words)  # multi-letter tokens
    for hyp in (words, tok("राम", add_special_tokens=False)["input_ids"] + [bare, bare]
                + tok("काम", add_special_tokens=False)["input_ids"][-1:]):
        proc = CTCPrefixScoring([x], 1, 1.0, blank, eos, pre_beam=CTC_PRE_BEAM_ALL, unit_ids=units, speller=speller)
        total = 0.0
        for step, c in enumerate(hyp + [eos]):
            joint = proc(torch.tensor([hyp[:step]], dtype=torch.long).view(1, step), logits)
            total += float(joint[0, c])
            if step == 0:
                assert float(joint[0, tok.bos_token_id]) < OUTSIDE_LOG_PROB / 2
        spelled = [units.index(u) for u in speller.spell_ids(hyp)]
        lp = torch.from_numpy(x)[:, None]
        expected = -float(F.ctc_loss(lp, torch.tensor([spelled]), torch.tensor([30]), torch.tensor([len(spelled)]),
                                     blank=units.index(blank), reduction="sum"))
        assert total == pytest.approx(expected, abs=1e-3), tok.decode(hyp)
