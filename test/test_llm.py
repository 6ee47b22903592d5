"""The LLM decoder wrapper and the model's sequence layout, on a tiny real Llama."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tiny_setup import UTTS, make_tiny_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    return make_tiny_models(root, [t for _, _, t, _, _ in UTTS])


def _model(models, projector="smear_moe", model_conf=None, **llm_conf):
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.llm import CausalLLM
    from espnet_llm_asr.model import LLMASRModel

    llm = CausalLLM(str(models["llm"]), **llm_conf)
    conf = {"hidden_dim": 16}
    if projector in ("smear_moe", "multi"):
        conf["num_experts"] = 2
    frontend = FRONTEND_CLASSES[projector](output_dim=llm.hidden_size, input_dim=8, **conf)
    return LLMASRModel(frontend, llm, lang_list=["hi", "ta"], **(model_conf or {}))


def test_prompt_layout_and_language_instruction(models):
    from espnet_llm_asr.llm import CausalLLM

    llm = CausalLLM(str(models["llm"]), lang_instruction=" Language: {lang_name}.")
    prefix, suffix = llm.prompt_ids("hi")
    assert prefix == [llm.tokenizer.bos_token_id]  # audio comes right after BOS
    assert llm.tokenizer.decode(suffix).strip() == "USER: Transcribe speech to text. Language: Hindi.\n ASSISTANT:".strip()
    _, suffix_none = llm.prompt_ids(None)
    assert "Language" not in llm.tokenizer.decode(suffix_none)


def test_bf16_llm_keeps_dtype_when_trainer_casts(models):
    model = _model(models, dtype="bfloat16")
    model.to(dtype=torch.float32)  # what ESPnet's trainer does with --train_dtype float32
    assert model.llm.dtype == torch.bfloat16
    assert next(model.frontend.projector.parameters()).dtype == torch.float32
    feats = torch.randn(2, 20, 8)
    text = torch.tensor([[5, 6, 7], [8, 9, -1]])
    loss, stats, _ = model(feats, torch.tensor([20, 12]), text, torch.tensor([3, 2]), torch.tensor([[0], [1]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.frontend.projector.parameters())
    assert all(p.grad is None for p in model.llm.parameters())  # frozen


def test_state_dict_holds_trainable_only_and_round_trips(models):
    model = _model(models)
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    other = _model(models)
    other.load_state_dict(state)  # strict: every trainable tensor present
    for k, v in other.state_dict().items():
        assert torch.equal(v, state[k])
    with pytest.raises(RuntimeError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if "experts" not in k})


def test_unfrozen_llm_is_saved(models):
    model = _model(models, freeze=False)
    assert any(k.startswith("llm.") for k in model.state_dict())


def test_clear_errors(models, tmp_path):
    from espnet_llm_asr.llm import CausalLLM

    with pytest.raises(FileNotFoundError, match="does not exist"):
        CausalLLM(str(tmp_path / "no_such_llm"))
    with pytest.raises(ValueError, match="dtype"):
        CausalLLM(str(models["llm"]), dtype="float8")
    import espnet_llm_asr  # noqa: F401
    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.model import LLMASRModel

    llm = CausalLLM(str(models["llm"]))
    frontend = FRONTEND_CLASSES["mono"](output_dim=llm.hidden_size + 1, input_dim=8, hidden_dim=16)
    with pytest.raises(ValueError, match="LLM hidden size"):
        LLMASRModel(frontend, llm)


def test_runaway_cap_forces_eos(models):
    """An LLM that never emits EOS on its own (its EOS logit pushed far down) stops at each
    utterance's cap, min(max_new_tokens, max(min_new_tokens_cap, ceil(seconds * max_tokens_per_second))),
    exactly, greedy and beam search."""
    model = _model(models).eval()
    eos = model.llm.eos_token_id

    def never_eos(module, args, logits):
        logits = logits.clone()
        logits[..., eos] = -1e4
        return logits

    handle = model.llm.model.get_output_embeddings().register_forward_hook(never_eos)
    try:
        torch.manual_seed(0)
        feats = torch.randn(2, 50, 8)
        lengths = torch.tensor([50, 10])  # 1.0 s and 0.2 s at 50 frames/s
        lang = torch.tensor([[0], [1]])
        for num_beams in (1, 2):
            def lens(**conf):
                hyps, _, _ = model.generate(feats, lengths, lang, num_beams=num_beams, **conf)
                assert eos not in hyps[0] + hyps[1]
                return [len(h) for h in hyps]

            assert lens(max_new_tokens=15) == [15, 15]  # no per-second cap: max_new_tokens for both
            assert lens(max_new_tokens=15, max_tokens_per_second=10, min_new_tokens_cap=1) == [10, 2]
            assert lens(max_new_tokens=15, max_tokens_per_second=10, min_new_tokens_cap=4) == [10, 4]
            assert lens(max_new_tokens=7, max_tokens_per_second=10, min_new_tokens_cap=1) == [7, 2]
            assert lens(max_new_tokens=15, max_tokens_per_second=2.5, min_new_tokens_cap=1) == [3, 1]  # ceil
    finally:
        handle.remove()


def test_aux_loss_weight_scales_the_projectors_aux_loss(models):
    """model_conf.aux_loss_weight w: on a SMEAR-MoE projector whose router is unbalanced, the
    loss is the CE plus w times the projector's own (load-balance) aux_loss, exactly; w = 0
    leaves the CE alone."""
    feats = torch.randn(3, 30, 8, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([30, 25, 15])
    text = torch.tensor([[5, 6, 7], [8, 9, -1], [10, -1, -1]])
    text_lengths = torch.tensor([3, 2, 1])
    lang = torch.tensor([[0], [1], [0]])
    out = {}
    for weight in (0.0, 1.0, 4.0):
        torch.manual_seed(0)  # the same projector each time
        model = _model(models, model_conf={"aux_loss_weight": weight}).train()
        assert model.aux_loss_weight == weight
        with torch.no_grad():
            model.frontend.projector.gate.router.bias += torch.tensor([3.0, -3.0])  # expert 0 takes ~all
        loss, stats, _ = model(feats, lengths, text, text_lengths, lang)
        proj = model.frontend.project(feats, lengths, model._lang_ids(lang))
        scalar = lambda t: t.detach().reshape(())  # noqa: E731
        out[weight] = (scalar(loss), {k: scalar(v) for k, v in stats.items()}, scalar(proj.aux_loss))
    loss0, stats0, aux = out[0.0]
    assert float(aux) > 0.04  # 0.2 * MSE((~1, ~0), 1/2)
    torch.testing.assert_close(loss0, stats0["loss_ce"])
    for weight in (1.0, 4.0):
        loss, stats, aux_w = out[weight]
        torch.testing.assert_close(aux_w, aux)
        torch.testing.assert_close(stats["loss_ce"], stats0["loss_ce"])
        torch.testing.assert_close(stats["aux_loss"], weight * aux)
        torch.testing.assert_close(loss - loss0, weight * aux, rtol=1e-5, atol=1e-6)


def test_tokenizer_that_does_not_match_the_llm(models, tmp_path):
    import shutil

    from espnet_llm_asr import tiny_models
    from espnet_llm_asr.llm import CausalLLM

    big = tmp_path / "big_tokenizer"
    tiny_models.train_tokenizer(["".join(chr(c) for c in range(0x0900, 0x097F))] * 3
                                + ["".join(chr(c) for c in range(0x0B80, 0x0BFF))] * 3, big)
    llm = tmp_path / "llm"
    shutil.copytree(models["llm"], llm)
    for f in big.iterdir():
        shutil.copy(f, llm / f.name)
    with pytest.raises(ValueError, match="tokenizer and LLM do not match"):
        CausalLLM(str(llm))


def test_lora_trains_adapters_only_and_saves_them(models):
    model = _model(models, lora_conf={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and trainable - lora == {n for n in trainable if n.startswith("frontend.projector.")}
    state = model.state_dict()
    assert set(state) == trainable  # LoRA weights are saved with the projector, the base LLM is not
    model.train()
    modes = {n: m.training for n, m in model.llm.model.named_modules() if n}
    assert not any(t for n, t in modes.items() if "lora_" not in n)  # the frozen base stays in eval
    assert all(t for n, t in modes.items() if n.endswith(("lora_A", "lora_B")))
    feats, text = torch.randn(1, 20, 8), torch.tensor([[5, 6]])
    loss, _, _ = model(feats, torch.tensor([20]), text, torch.tensor([2]), torch.tensor([[0]]))
    loss.backward()
    # lora_B starts at zero, so the first gradient reaches lora_B
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in lora if "lora_B" in n)


def test_lora_lr_scale_gives_the_adapters_their_own_rate(models):
    """lora_lr_scale: LoRA tensors in a second parameter group at lr * scale; the scheduler scales both."""
    import argparse

    from espnet2.schedulers.warmup_lr import WarmupLR

    from espnet_llm_asr.task import LLMASRTask

    model = _model(models, lora_conf={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    args = argparse.Namespace(optim="adamw", optim_conf={"lr": 0.004, "weight_decay": 0.0},
                              sharded_ddp=False, exclude_weight_decay=False, lora_lr_scale=0.25)
    (optim,) = LLMASRTask.build_optimizers(args, model)
    names = {id(p): n for n, p in model.named_parameters()}
    projector, lora = optim.param_groups
    assert projector["lr"] == 0.004 and lora["lr"] == pytest.approx(0.001)
    assert {names[id(p)] for p in lora["params"]} == {n for n, p in model.named_parameters()
                                                      if p.requires_grad and "lora_" in n}
    assert all(names[id(p)].startswith("frontend.projector.") for p in projector["params"])
    sched = WarmupLR(optim, warmup_steps=10)
    optim.step()
    sched.step()
    assert lora["lr"] / projector["lr"] == pytest.approx(0.25)
    # scale 1.0 is ESPnet's own single group; a scale without LoRA is refused
    (plain,) = LLMASRTask.build_optimizers(argparse.Namespace(**dict(vars(args), lora_lr_scale=1.0)), model)
    assert len(plain.param_groups) == 1
    with pytest.raises(ValueError, match="no trainable LoRA parameters"):
        LLMASRTask.build_optimizers(args, _model(models))


def test_auxiliary_ctc_through_the_llm_output_head(models):
    """ctc_weight adds a CTC loss of the projected speech read by the LLM's own output head."""
    torch.manual_seed(0)
    # eval: no dropout, repeatable; the blank offset off: the head's own blank, by hand below
    model = _model(models, model_conf={"ctc_weight": 0.5, "ctc_blank_bias": 0}).eval()
    feats = torch.randn(2, 10, 8)  # 10 frames -> 2 projected vectors (stride 5)
    lengths = torch.tensor([10, 10])
    text = torch.tensor([[5, -1], [7, 9]])
    text_lengths = torch.tensor([1, 2])
    loss, stats, _ = model(feats, lengths, text, text_lengths, torch.tensor([[0], [1]]))
    assert "loss_ctc" in stats
    torch.testing.assert_close(loss, stats["loss_ce"] + stats["aux_loss"] + 0.5 * stats["loss_ctc"])
    # utterance 0 by hand: one target token a over 2 vectors; paths (a a), (a -), (- a)
    proj = model.frontend.project(feats, lengths, torch.tensor([0, 1]))
    assert proj.lengths.tolist() == [2, 2]
    p = model.llm.token_logits(proj.embeds[0]).float().softmax(-1)
    blank = model.llm.pad_token_id
    prob_a = p[0, 5] * p[1, 5] + p[0, 5] * p[1, blank] + p[0, blank] * p[1, 5]
    # utterance 1: two different tokens in 2 vectors: only the path (b c)
    p1 = model.llm.token_logits(proj.embeds[1]).float().softmax(-1)
    prob_bc = p1[0, 7] * p1[1, 9]
    expected = (-prob_a.log() / 1 - prob_bc.log() / 2) / 2  # per-token, then batch mean
    torch.testing.assert_close(stats["loss_ctc"].reshape(()), expected.detach(), rtol=1e-4, atol=1e-4)
    # the CTC term alone trains the projector
    model.zero_grad()
    model.ctc_loss(proj, [[5], [7, 9]]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.frontend.projector.parameters()
               if p.requires_grad and p.dim() > 1)
    with pytest.raises(ValueError, match="ctc_weight"):
        _model(models, model_conf={"ctc_weight": -1.0})


def test_auxiliary_ctc_blank_bias(models, caplog):
    """ctc_blank_bias: a trainable scalar added to the CTC's blank logit only (the LLM head
    untouched), on by default with the CTC (5.0), off with 0 / false / null; it trains and is saved;
    a checkpoint without it loads with the offset 0 (as it was trained); without the CTC it is
    refused (decoding's use of it: test_model.py::test_joint_ctc_decoding)."""
    import logging

    torch.manual_seed(0)
    model = _model(models, model_conf={"ctc_weight": 1.0}).eval()  # the default: on, at 5.0
    assert float(model.ctc_blank_bias) == 5.0
    pad = model.llm.pad_token_id
    feats = torch.randn(2, 20, 8)
    proj = model.frontend.project(feats, torch.tensor([20, 15]), torch.tensor([0, 1]))
    logits = model.llm.token_logits(proj.embeds).float()
    expected = logits.clone()
    expected[..., pad] += 5.0
    lp = model.ctc_log_probs(proj.embeds)
    torch.testing.assert_close(lp, expected.log_softmax(-1))
    assert (lp[..., pad] > logits.log_softmax(-1)[..., pad]).all()  # the blank made more likely
    for off in (0, False, None):
        plain = _model(models, model_conf={"ctc_weight": 1.0, "ctc_blank_bias": off}).eval()
        assert plain.ctc_blank_bias is None and "ctc_blank_bias" not in plain.state_dict()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "ctc_blank_bias"})
    torch.testing.assert_close(plain.ctc_log_probs(proj.embeds), logits.log_softmax(-1))
    # a checkpoint trained with the offset off, into a model with the default: the offset is 0
    old = _model(models, model_conf={"ctc_weight": 1.0}).eval()
    with caplog.at_level(logging.WARNING):
        old.load_state_dict(plain.state_dict())
    assert float(old.ctc_blank_bias) == 0.0 and "no ctc_blank_bias" in caplog.text
    torch.testing.assert_close(old.ctc_log_probs(proj.embeds), logits.log_softmax(-1))
    model.zero_grad()
    model.ctc_loss(proj, [[5, 6], [7]]).backward()
    assert model.ctc_blank_bias.grad is not None and model.ctc_blank_bias.grad.abs() > 0
    assert all(p.grad is None for p in model.llm.parameters())  # the head stays frozen
    assert "ctc_blank_bias" in model.state_dict()
    other = _model(models, model_conf={"ctc_weight": 1.0, "ctc_blank_bias": 2.0})
    assert float(other.ctc_blank_bias) == 2.0
    other.load_state_dict(model.state_dict())
    assert float(other.ctc_blank_bias) == 5.0
    assert _model(models).ctc_blank_bias is None  # no CTC, no offset
    with pytest.raises(ValueError, match="ctc_weight > 0"):
        _model(models, model_conf={"ctc_blank_bias": 5.0})
    for bad in ("yes", True):
        with pytest.raises(ValueError, match="ctc_blank_bias must be"):
            _model(models, model_conf={"ctc_weight": 1.0, "ctc_blank_bias": bad})


def test_auxiliary_ctc_on_characters_targets_the_spelling(models):
    """ctc_unit char: the same CTC, its targets the transcript spelled in single-character pieces."""
    from espnet_llm_asr.ctc_vocab import CharSpeller

    torch.manual_seed(0)
    model = _model(models, model_conf={"ctc_weight": 1.0, "ctc_unit": "char"}).eval()
    tok = model.llm.tokenizer
    ids = tok("राम राम", add_special_tokens=False)["input_ids"]
    boundary = tok.convert_tokens_to_ids("\u2581")
    spelled = CharSpeller(tok, boundary=boundary).spell("राम राम")
    assert len(spelled) == 7 and spelled != ids and tok.unk_token_id not in spelled
    assert spelled[:3] == spelled[4:] and spelled[3] == boundary  # the words apart by the word boundary
    feats = torch.randn(1, 60, 8)  # 12 projected vectors: room for the 7 characters
    proj = model.frontend.project(feats, torch.tensor([60]), torch.tensor([0]))
    token_model = _model(models, model_conf={"ctc_weight": 1.0}).eval()
    token_model.load_state_dict(model.state_dict())
    expected = token_model.ctc_loss(proj, [spelled])  # the token CTC against the spelling, by hand
    torch.testing.assert_close(model.ctc_loss(proj, [ids]), expected)
    assert not torch.allclose(token_model.ctc_loss(proj, [ids]), expected)
    with pytest.raises(ValueError, match="ctc_unit"):
        _model(models, model_conf={"ctc_unit": "word"})


def _char_ctc_pair(models, option: dict):
    """A model with a character CTC (over the pieces of "राम" and the word boundary) and ``option``,
    the same model without it (same weights), a batch of two utterances, and the CTC's conf."""
    from espnet_llm_asr.ctc_vocab import char_piece_ids, word_boundary_id

    torch.manual_seed(0)
    tok = _model(models).llm.tokenizer
    vocab = sorted(set(char_piece_ids(tok, "राम")) | {word_boundary_id(tok)})
    conf = {"ctc_weight": 1.0, "ctc_unit": "char", "ctc_vocab": vocab, "ctc_blank_bias": 0.0}
    model = _model(models, model_conf={**conf, **option}).eval()
    plain = _model(models, model_conf=conf).eval()
    plain.load_state_dict(model.state_dict())
    feats, feats_lengths = torch.randn(2, 60, 8), torch.tensor([60, 35])
    text = torch.tensor(tok(["राम राम", "राम"], add_special_tokens=False, padding=True)["input_ids"])
    text[1, len(tok("राम", add_special_tokens=False)["input_ids"]):] = -1
    return model, plain, (feats, feats_lengths, text, (text >= 0).sum(1), torch.tensor([[0], [1]])), conf


def test_ctc_compress_feeds_the_llm_one_vector_per_ctc_label(models):
    """ctc_compress: the LLM reads the runs of the CTC's greedy labels, blank runs dropped."""
    from espnet_llm_asr.ctc_compress import ctc_compress

    model, plain, (feats, feats_lengths, text, text_lengths, lang), conf = _char_ctc_pair(
        models, {"ctc_compress": "vectors"})
    proj = model.frontend.project(feats, feats_lengths, lang.view(-1))
    log_probs = model.ctc_log_probs(proj.embeds, over_vocab=False)
    labels = log_probs.argmax(-1)
    assert (labels != model.ctc_vocab.blank_index).any()  # a random projector labels some vectors
    embeds, lengths = ctc_compress(proj.embeds, proj.lengths, labels, model.ctc_vocab.blank_index)
    assert (lengths < proj.lengths).all()

    seen = []
    hook = model.llm.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    loss, stats, _ = model(feats, feats_lengths, text, text_lengths, lang)
    hook.remove()
    loss_plain, stats_plain, _ = plain(feats, feats_lengths, text, text_lengths, lang)
    torch.testing.assert_close(stats["loss_ctc"], stats_plain["loss_ctc"])  # the CTC reads every vector
    assert not torch.allclose(stats["loss_ce"], stats_plain["loss_ce"])  # the LLM reads fewer
    assert float(stats["compress_ratio"]) == pytest.approx(float(lengths.sum() / proj.lengths.sum()))
    # by hand: the LLM's loss on the compressed vectors
    manual = dataclasses.replace(proj, embeds=embeds, lengths=lengths)
    texts = [text[i, : int(text_lengths[i])].tolist() for i in range(2)]
    torch.testing.assert_close(stats["loss_ce"].view(()), model._llm_loss(manual, lang.view(-1), texts, False)[0])
    hyps, _, _ = model.generate(feats, feats_lengths, lang, max_new_tokens=3)
    assert len(hyps) == 2
    with pytest.raises(ValueError, match="ctc_compress needs"):
        _model(models, model_conf={"ctc_compress": "vectors"})
    with pytest.raises(ValueError, match="null, vectors or embeddings"):
        _model(models, model_conf={**conf, "ctc_compress": "average"})

    # embeddings: the LLM's input embeddings of the units, weighted by each run's mean posteriors
    emb_model = _model(models, model_conf={**conf, "ctc_compress": "embeddings"}).eval()
    emb_model.load_state_dict(model.state_dict())
    got = emb_model._llm_input(proj, log_probs)
    runs, n = ctc_compress(log_probs, proj.lengths, labels, model.ctc_vocab.blank_index)
    assert got.lengths.tolist() == n.tolist() == lengths.tolist()
    table = model.llm.embed(model.ctc_vocab.ids).float()  # (K, D)
    for i in range(2):
        for j in range(int(n[i])):
            p = runs[i, j].exp()
            p[model.ctc_vocab.blank_index] = 0
            torch.testing.assert_close(got.embeds[i, j], (p / p.sum()) @ table, rtol=1e-4, atol=1e-5)
    assert (got.embeds[1, int(n[1]):] == 0).all()
    loss, stats, _ = emb_model(feats, feats_lengths, text, text_lengths, lang)
    loss.backward()
    assert emb_model.frontend.projector.parameters().__next__().grad is not None  # through the posteriors


def test_decoded_text_is_one_line(models):
    """A hypothesis with newlines (beam search can continue into the prompt's
    "\\n ASSISTANT:") must stay one line of a Kaldi ``text`` file."""
    from espnet_llm_asr.llm import CausalLLM

    llm = CausalLLM(str(models["llm"]))
    ids = llm.tokenize("a b\n ASSISTANT:  c")
    assert "\n" in llm.tokenizer.decode(ids)  # the tokenizer keeps the newline ...
    assert llm.decode(ids) == "a b ASSISTANT: c"  # ... the hypothesis does not


def test_chat_template_prompt_gets_bos_once(models):
    """A chat template that writes BOS itself and one that does not: the prompt starts with BOS once."""
    from espnet_llm_asr.llm import CausalLLM

    llm = CausalLLM(str(models["llm"]))
    bos = llm.tokenizer.bos_token_id
    for template in ("{{ bos_token }}user: {{ messages[0]['content'] }} assistant:",
                     "user: {{ messages[0]['content'] }} assistant:"):
        llm.tokenizer.chat_template = template
        llm.set_prompt(use_chat_template=True, lang_instruction=" Language: {lang_name}.")
        prefix, suffix = llm.prompt_ids("ta")
        assert prefix[0] == bos and (prefix + suffix).count(bos) == 1, template
        assert prefix[1:] == llm.tokenize("user: ")
        assert llm.decode(suffix) == "Transcribe speech to text. Language: Tamil. assistant:"
        assert llm.eos_token_id not in prefix + suffix
    llm.set_prompt()
    assert llm.prompt_ids(None)[0] == [bos]


def test_prompt_errors_name_the_key(models):
    """No chat template to use, or no {speech}: a clear error naming the llm_conf key, before the
    LLM weights are loaded (set_prompt runs right after the tokenizer)."""
    from unittest import mock

    from espnet_llm_asr.llm import CausalLLM

    with mock.patch("transformers.AutoModelForCausalLM.from_pretrained", side_effect=AssertionError("loaded")):
        with pytest.raises(ValueError, match="llm_conf.use_chat_template is true but the tokenizer .* no chat"):
            CausalLLM(str(models["llm"]), use_chat_template=True)
        with pytest.raises(ValueError, match=r"llm_conf.prompt_template must contain \{speech\}"):
            CausalLLM(str(models["llm"]), prompt_template="USER: transcribe")
    llm = CausalLLM(str(models["llm"]))
    llm.tokenizer.chat_template = "{{ messages[0]['content'] | replace('{speech}', '') }}"
    llm.set_prompt(use_chat_template=True)
    with pytest.raises(ValueError, match="does not keep the {speech} placeholder"):
        llm.prompt_ids(None)


def test_lora_target_missing_from_the_llm(models):
    from espnet_llm_asr.llm import CausalLLM

    with pytest.raises(ValueError, match=r"target_modules \['c_attn'\] name no module of LlamaForCausalLM.*'q_proj'"):
        CausalLLM(str(models["llm"]), lora_conf={"r": 2, "target_modules": ["q_proj", "c_attn"]})


def test_logits_to_keep(models):
    """forward(..., logits_to_keep): only the asked positions go through the output head."""
    model = _model(models).eval()
    llm = model.llm
    embeds = llm.embed(torch.tensor([[1, 5, 6, 7, 8, 9]]))
    mask = torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        full = llm(embeds, mask)
        torch.testing.assert_close(llm(embeds, mask, logits_to_keep=2), full[:, -2:])
        torch.testing.assert_close(llm(embeds, mask, logits_to_keep=torch.tensor([1, 3])), full[:, [1, 3]])


def test_hold_steps_lora_keeps_the_adapters_out_of_the_first_batches(models):
    """hold_steps {lora: 2}: batches 1-2 run the base LLM (no gradient reaches LoRA), batch 3 trains it;
    validation does not count; the count is saved and restored with the checkpoint."""
    lora_conf = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    model = _model(models, lora_conf=lora_conf, model_conf={"hold_steps": {"lora": 2}})
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    feats, text = torch.randn(1, 20, 8), torch.tensor([[5, 6]])

    def step():
        model.zero_grad(set_to_none=True)
        loss, stats, _ = model(feats, torch.tensor([20]), text, torch.tensor([2]), torch.tensor([[0]]))
        loss.backward()
        return stats["lora_held"].item(), [p.grad for p in lora]

    model.eval()
    with torch.no_grad():
        model(feats, torch.tensor([20]), text, torch.tensor([2]), torch.tensor([[0]]))
    model.train()
    for _ in range(2):
        held, grads = step()
        assert held == 1.0 and all(g is None for g in grads)
        assert all(p.grad is not None for p in model.frontend.projector.parameters())
    held, grads = step()
    assert held == 0.0 and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert int(model.train_batches) == 3
    state = model.state_dict()
    assert int(state["train_batches"]) == 3
    other = _model(models, lora_conf=lora_conf, model_conf={"hold_steps": {"lora": 2}})
    other.load_state_dict(state)
    assert int(other.train_batches) == 3
    # without the option the count is not part of the checkpoint; without LoRA it is refused
    assert "train_batches" not in _model(models, lora_conf=lora_conf).state_dict()
    with pytest.raises(ValueError, match="no LoRA"):
        _model(models, model_conf={"hold_steps": {"lora": 5}})
    for bad, match in (({"encoder": 5}, "unknown parts"), ({"lora": -1}, "integer >= 0"), ({"llm": 1.5}, "integer")):
        with pytest.raises(ValueError, match=match):
            _model(models, lora_conf=lora_conf, model_conf={"hold_steps": bad, "ctc_weight": 1.0})


def test_hold_steps_llm_trains_the_projector_by_the_ctc_alone_first(models, monkeypatch):
    """hold_steps {llm: 2}: batches 1-2 never call the LLM (loss = CTC + aux exactly, CE and accuracy
    NaN, no gradient reaches LoRA), batch 3 runs it; validation always runs it and does not count;
    the count is saved; without a CTC the option is refused."""
    import math

    from espnet_llm_asr.llm import CausalLLM

    lora_conf = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    model = _model(models, lora_conf=lora_conf, model_conf={"hold_steps": {"llm": 2}, "ctc_weight": 0.5})
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    calls = []
    forward = CausalLLM.forward
    monkeypatch.setattr(CausalLLM, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    torch.manual_seed(0)
    feats, text = torch.randn(1, 20, 8), torch.tensor([[5, 6]])
    batch = (feats, torch.tensor([20]), text, torch.tensor([2]), torch.tensor([[0]]))

    def step():
        model.zero_grad(set_to_none=True)
        calls.clear()
        loss, stats, _ = model(*batch)
        loss.backward()
        return loss, stats, [p.grad for p in lora]

    model.eval()
    with torch.no_grad():
        _, stats, _ = model(*batch)
    assert calls and math.isfinite(stats["acc"].item()) and stats["llm_held"].item() == 0.0
    model.train()
    for _ in range(2):
        loss, stats, grads = step()
        assert not calls and stats["llm_held"].item() == 1.0
        assert math.isnan(stats["loss_ce"].item()) and math.isnan(stats["acc"].item())
        torch.testing.assert_close(loss, stats["aux_loss"] + 0.5 * stats["loss_ctc"])
        assert all(g is None for g in grads)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.frontend.projector.parameters())
    loss, stats, grads = step()
    assert calls and stats["llm_held"].item() == 0.0 and math.isfinite(stats["loss_ce"].item())
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert int(model.state_dict()["train_batches"]) == 3
    with pytest.raises(ValueError, match="ctc_weight"):
        _model(models, model_conf={"hold_steps": {"llm": 5}})


def test_hold_steps_phases_follow_one_another(models):
    """hold_steps {llm: 1, lora: 2}: batch 1 without the LLM, batches 2-3 with the base LLM (adapters
    out), batch 4 the whole model."""
    lora_conf = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    model = _model(models, lora_conf=lora_conf, model_conf={"hold_steps": {"llm": 1, "lora": 2}, "ctc_weight": 1.0})
    batch = (torch.randn(1, 20, 8), torch.tensor([20]), torch.tensor([[5, 6]]), torch.tensor([2]), torch.tensor([[0]]))
    model.train()
    held = []
    for _ in range(4):
        _, stats, _ = model(*batch)
        held.append((stats["llm_held"].item(), stats["lora_held"].item()))
    assert held == [(1.0, 0.0), (0.0, 1.0), (0.0, 1.0), (0.0, 0.0)]


def test_removed_options_load_with_a_message_naming_the_replacement(models, caplog):
    """An older config.yaml (llm_conf.speech_embed_scale / speech_rms, model_conf.llm_hold_steps /
    lora_hold_steps / extract_feats_in_collect_stats) still builds its model: each removed key logs
    one warning line naming its replacement, and the config the task records holds the replacements."""
    import argparse
    import logging

    from espnet_llm_asr.removed_options import migrate_removed_options, removed_keys
    from espnet_llm_asr.task import LLMASRTask

    lora_conf = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    args = argparse.Namespace(
        llm=str(models["llm"]), frontend="mono", frontend_conf={"input_dim": 8, "hidden_dim": 16}, lang_list=None,
        llm_conf={"lora_conf": lora_conf, "speech_embed_scale": 25.25, "speech_rms": 1.03},
        model_conf={"extract_feats_in_collect_stats": False, "ctc_weight": 1.0, "ctc_blank_bias": 5.0,
                    "llm_hold_steps": 400, "lora_hold_steps": 500})
    with caplog.at_level(logging.WARNING):
        model = LLMASRTask.build_model(args)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key, new in (("llm_conf.speech_embed_scale", "llm_conf.speech_scale"),
                     ("llm_conf.speech_rms", "llm_conf.speech_scale"),
                     ("model_conf.llm_hold_steps", "model_conf.hold_steps"),
                     ("model_conf.lora_hold_steps", "model_conf.hold_steps"),
                     ("model_conf.extract_feats_in_collect_stats", "drop it")):
        found = [line for line in lines if line.startswith(f"{key} is removed")]
        assert len(found) == 1 and new in found[0] and "\n" not in found[0], (key, lines)
    assert str(model.llm.speech_scale) == "rms:1.03"  # speech_rms won over speech_embed_scale, as before
    assert model.hold_steps == {"llm": 400, "lora": 100}  # the adapters still join at batch 500
    assert float(model.ctc_blank_bias) == 5.0
    assert args.llm_conf["speech_scale"] == "rms:1.03" and not removed_keys("llm_conf") & set(args.llm_conf)
    assert args.model_conf["hold_steps"] == {"llm": 400, "lora": 100}
    assert not removed_keys("model_conf") & set(args.model_conf)
    # each alone, and a replacement given beside a removed key wins
    assert migrate_removed_options("llm_conf", {"speech_embed_scale": "auto", "speech_rms": None}) == {
        "speech_scale": "factor"}
    assert migrate_removed_options("llm_conf", {"speech_rms": "auto"}) == {"speech_scale": "rms"}
    assert migrate_removed_options("model_conf", {"lora_hold_steps": 500}) == {"hold_steps": {"lora": 500}}
    assert migrate_removed_options("model_conf", {"llm_hold_steps": 400, "lora_hold_steps": 300}) == {
        "hold_steps": {"llm": 400}}
    assert migrate_removed_options("llm_conf", {"speech_scale": "factor:2.0", "speech_rms": 1.0}) == {
        "speech_scale": "factor:2.0"}
    assert migrate_removed_options("model_conf", {"ctc_weight": 1.0}) == {"ctc_weight": 1.0}


def test_auxiliary_ctc_over_a_token_subset(models):
    """ctc_vocab: the CTC's softmax runs over the given tokens and the blank only (the LLM head's
    rows for them), the loss is the CTC of those log-probabilities by hand, an utterance with a
    token outside the set adds nothing, and for decoding the log-probabilities spread back over
    the vocabulary with a finite floor elsewhere."""
    import torch.nn.functional as F

    from espnet_llm_asr.ctc_vocab import OUTSIDE_LOG_PROB

    torch.manual_seed(0)
    subset = [9, 5, 7, 5]  # any order, repeats
    model = _model(models, model_conf={"ctc_weight": 1.0, "ctc_blank_bias": 2.0, "ctc_vocab": subset}).eval()
    full = _model(models, model_conf={"ctc_weight": 1.0, "ctc_blank_bias": 2.0}).eval()
    full.load_state_dict(model.state_dict())
    pad = model.llm.pad_token_id
    ids = sorted({5, 7, 9, pad})
    assert model.ctc_vocab.ids.tolist() == ids and len(model.ctc_vocab) == 4
    feats = torch.randn(2, 20, 8)
    proj = model.frontend.project(feats, torch.tensor([20, 15]), torch.tensor([0, 1]))
    logits = model.llm.token_logits(proj.embeds).float()[..., ids]
    logits[..., ids.index(pad)] += 2.0
    compact = logits.log_softmax(-1)
    torch.testing.assert_close(model.ctc_log_probs(proj.embeds, over_vocab=False), compact)
    spread = model.ctc_log_probs(proj.embeds)
    assert spread.shape == full.ctc_log_probs(proj.embeds).shape
    torch.testing.assert_close(spread[..., ids], compact)
    outside = torch.ones(spread.size(-1), dtype=torch.bool)
    outside[ids] = False
    assert (spread[..., outside] == OUTSIDE_LOG_PROB).all()
    # the loss by hand over the subset (targets as places in it), per-token then batch mean
    places = {t: i for i, t in enumerate(ids)}
    texts = [[5, 9, 9], [7]]
    by_hand = F.ctc_loss(compact.transpose(0, 1), torch.tensor([places[t] for ids_ in texts for t in ids_]),
                         proj.lengths.long(), torch.tensor([3, 1]), blank=ids.index(pad), reduction="mean")
    torch.testing.assert_close(model.ctc_loss(proj, texts), by_hand)
    assert not torch.allclose(full.ctc_loss(proj, texts), by_hand)  # the whole vocabulary differs
    # an utterance with a token outside the set (11) contributes zero, the other its share
    alone = F.ctc_loss(compact[1:].transpose(0, 1), torch.tensor([places[7]]), proj.lengths[1:].long(),
                       torch.tensor([1]), blank=ids.index(pad), reduction="mean")
    torch.testing.assert_close(model.ctc_loss(proj, [[5, 11], [7]]), alone / 2)
    model.zero_grad()
    model.ctc_loss(proj, texts).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.frontend.projector.parameters()
               if p.requires_grad and p.dim() > 1)
    assert all(p.grad is None for p in model.llm.parameters())
    assert not any("ctc_vocab" in k for k in model.state_dict())  # rebuilt from the config
    # the frozen head's rows are gathered once, and again after the head changes in place
    head = model.llm.model.get_output_embeddings()
    assert model.ctc_vocab.rows(head.weight) is model.ctc_vocab.rows(head.weight)
    with torch.no_grad():
        head.weight.mul_(2.0)
    torch.testing.assert_close(model.ctc_vocab.rows(head.weight), head.weight[model.ctc_vocab.ids])
    with pytest.raises(ValueError, match="ctc_weight > 0"):
        _model(models, model_conf={"ctc_vocab": [5]})
    with pytest.raises(ValueError, match="train_text"):
        _model(models, model_conf={"ctc_weight": 1.0, "ctc_vocab": "train_text"})  # unresolved
    with pytest.raises(ValueError, match="outside the LLM's vocabulary"):
        _model(models, model_conf={"ctc_weight": 1.0, "ctc_vocab": [5, 10 ** 7]})


def test_ctc_vocab_from_a_text_file(models, tmp_path):
    """transcript_token_ids: the sorted tokens of a Kaldi text file, tokenized as the task does;
    a line without a transcript is named."""
    from transformers import AutoTokenizer

    from espnet_llm_asr.ctc_vocab import transcript_token_ids

    tok = AutoTokenizer.from_pretrained(str(models["llm"]))
    text = tmp_path / "text"
    text.write_text("u1 राम राम\n\nu2 सीता\n", encoding="utf-8")
    expected = sorted(set(tok("राम राम", add_special_tokens=False)["input_ids"])
                      | set(tok("सीता", add_special_tokens=False)["input_ids"]))
    assert transcript_token_ids(str(text), tok) == expected
    text.write_text("u1 राम\nu2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text:2: no transcript after the utterance id 'u2'"):
        transcript_token_ids(str(text), tok)


def test_ctc_char_vocab_from_a_text_file(models, tmp_path):
    """The letters and scripts of a Kaldi text file (ids and digits aside), the tiny tokenizer's
    pieces of those letters and its word boundary; a file without letters is named."""
    from transformers import AutoTokenizer

    from espnet_llm_asr.ctc_vocab import char_piece_ids, transcript_chars, transcript_scripts, word_boundary_id

    tok = AutoTokenizer.from_pretrained(str(models["llm"]))
    text = tmp_path / "text"
    text.write_text("u1 राम 12\nu2 सीता\n", encoding="utf-8")
    assert transcript_chars(str(text)) == sorted(set("रामसीता"))
    assert transcript_scripts(str(text)) == ["DEVANAGARI"]
    ids = char_piece_ids(tok, transcript_chars(str(text)))
    known = {c for c in "रामसीता" if tok.convert_tokens_to_ids(c) != tok.unk_token_id}
    assert len(known) >= 4 and sorted(tok.convert_ids_to_tokens(ids)) == sorted(known)  # unknown ones left out
    assert tok.convert_ids_to_tokens(word_boundary_id(tok)) == "\u2581"
    text.write_text("u1 12 34\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text: no letters"):
        transcript_scripts(str(text))


@pytest.mark.parametrize("flags, expected", [({"avx2", "avx512_bf16"}, torch.bfloat16),
                                             ({"avx2", "amx_bf16", "amx_tile"}, torch.bfloat16),
                                             ({"avx2", "avx512f"}, torch.float32),
                                             (set(), torch.float32)])
def test_dtype_auto_chooses_bf16_where_the_cpu_has_bf16_units(models, monkeypatch, caplog, flags, expected):
    """llm_conf.dtype: auto loads bf16 weights on a CPU with AMX or AVX512-BF16, float32 elsewhere,
    and logs the choice with its reason."""
    import logging

    from espnet_llm_asr import torch_utils
    from espnet_llm_asr.llm import CausalLLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch_utils, "cpu_flags", lambda: set(flags))
    with caplog.at_level(logging.INFO):
        llm = CausalLLM(str(models["llm"]), dtype="auto")
    assert llm.dtype == expected
    assert llm.pinned_dtype == (expected != torch.float32)
    assert f"llm_conf.dtype: auto -> {str(expected).replace('torch.', '')}" in caplog.text
    with pytest.raises(ValueError, match=r"llm_conf.dtype: unknown dtype 'bf16'.*'auto'"):
        CausalLLM(str(models["llm"]), dtype="bf16")


def test_bf16_and_float32_training_steps_agree(models):
    """The same model and batch in bf16 and float32: loss and projector gradients within bf16's tolerance,
    and the bf16 head (given a strided slice by logits_to_keep) runs on a contiguous input."""
    feats = torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(1))
    text = torch.tensor([[5, 6, 7], [8, 9, -1]])
    batch = (feats, torch.tensor([20, 12]), text, torch.tensor([3, 2]), torch.tensor([[0], [1]]))
    results = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = _model(models, dtype=dtype, model_conf={"ctc_weight": 0.3})
        seen = []
        model.llm.model.get_output_embeddings().register_forward_hook(
            lambda mod, args, out: seen.append(args[0].is_contiguous()))
        loss, _, _ = model(*batch)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.frontend.projector.parameters()])
        results[dtype] = (loss.detach(), grads)
        assert seen and all(seen)
    (l32, g32), (l16, g16) = results["float32"], results["bfloat16"]
    assert l16.dtype == torch.float32 and g16.dtype == torch.float32
    torch.testing.assert_close(l16, l32, rtol=2e-2, atol=2e-2)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98
    assert not torch.equal(g16, g32)  # the bf16 step did run in bf16


def _ctc_hearing_ram(model, frames: int) -> torch.Tensor:
    """(frames, K) CTC log-probabilities of a CTC that hears "राम राम ...": its path cycles blank,
    र, ा, म, ▁ (the model's character CTC units)."""
    from espnet_llm_asr.ctc_vocab import word_boundary_id

    tok, ids = model.llm.tokenizer, model.ctc_vocab.ids.tolist()
    cycle = [model.ctc_vocab.blank_index] + [ids.index(tok.convert_tokens_to_ids(c)) for c in "राम"]
    cycle.append(ids.index(word_boundary_id(tok)))
    path = torch.tensor([cycle[t % len(cycle)] for t in range(frames)])
    return torch.nn.functional.one_hot(path, len(ids)).float().mul(20).log_softmax(-1)


def test_ctc_draft_puts_the_ctc_transcript_after_the_speech(models):
    """ctc_draft: the LLM reads, after the speech, its own tokens of the CTC's greedy transcript:
    the loss equals the one computed by hand with those tokens embedded there, and decoding reads them too."""
    from espnet_llm_asr.ctc_draft import ctc_greedy_units, draft_token_ids

    model, plain, (feats, feats_lengths, text, text_lengths, lang), _ = _char_ctc_pair(models, {"ctc_draft": True})
    tok = model.llm.tokenizer
    proj = model.frontend.project(feats, feats_lengths, lang.view(-1))
    # the projected vectors' CTC head is random; only the path matters here, so both models get this one
    fixed = _ctc_hearing_ram(model, proj.embeds.size(1))
    ids = model.ctc_vocab.ids.tolist()

    def ctc_log_probs(embeds, over_vocab=True):
        return fixed.expand(embeds.size(0), -1, -1) + 0 * embeds.sum()  # keeps the graph to the projector

    model.ctc_log_probs = plain.ctc_log_probs = ctc_log_probs
    log_probs = model.ctc_log_probs(proj.embeds, over_vocab=False)
    units = ctc_greedy_units(log_probs.argmax(-1), proj.lengths, model.ctc_vocab.blank_index)
    drafts = draft_token_ids(units, ids, tok, max_tokens=100)
    assert tok.decode(drafts[0]).split()[:2] == ["राम", "राम"] and len(drafts[1]) < len(drafts[0])

    loss, stats, _ = model(feats, feats_lengths, text, text_lengths, lang)
    loss_plain, stats_plain, _ = plain(feats, feats_lengths, text, text_lengths, lang)
    torch.testing.assert_close(stats["loss_ctc"], stats_plain["loss_ctc"])
    assert not torch.allclose(stats["loss_ce"], stats_plain["loss_ce"])  # the LLM reads more
    texts = [text[i, : int(text_lengths[i])].tolist() for i in range(2)]
    by_hand = model._llm_loss(proj, lang.view(-1), texts, False, drafts)[0]
    torch.testing.assert_close(stats["loss_ce"].view(()), by_hand)
    # the draft's tokens sit between the speech and the prompt's suffix, embedded as text
    pieces = model._pieces(proj, lang.view(-1), None, drafts)
    prefix, _ = model.llm.prompt_ids(None)
    n0 = len(prefix) + int(proj.lengths[0])
    torch.testing.assert_close(pieces[0].head[n0:], model.llm.embed(torch.tensor(drafts[0])))

    def prompt_length(m) -> int:  # the first forward's input length: the prompt the LLM reads
        seen = []
        hook = m.llm.model.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(kwargs.get("inputs_embeds")), with_kwargs=True)
        m.generate(feats, feats_lengths, lang, max_new_tokens=2)
        hook.remove()
        return next(x for x in seen if x is not None).shape[1]

    assert prompt_length(model) == prompt_length(plain) + max(len(d) for d in drafts)
    with pytest.raises(ValueError, match="ctc_draft needs"):
        _model(models, model_conf={"ctc_draft": True})


def test_joint_decoding_with_a_character_ctc_spells_the_hypothesis(models):
    """Joint decoding with a character CTC (``ctc_unit: char``): a candidate token is scored by the
    letters it adds to the hypothesis' spelling, so with the CTC's weight 1 the hypothesis is what a
    CTC that hears "राम राम ..." says, words apart, and the LLM alone says something else."""
    from espnet_llm_asr.ctc_draft import ctc_greedy_units, draft_token_ids

    model, _, (feats, feats_lengths, _, _, lang), _ = _char_ctc_pair(models, {})
    tok = model.llm.tokenizer
    proj = model.frontend.project(feats, feats_lengths, lang.view(-1))
    ids = model.ctc_vocab.ids.tolist()
    fixed = _ctc_hearing_ram(model, proj.embeds.size(1))
    model.ctc_log_probs = lambda embeds, over_vocab=True: fixed.expand(embeds.size(0), -1, -1).clone()
    units = ctc_greedy_units(fixed.expand(2, -1, -1).argmax(-1), proj.lengths, model.ctc_vocab.blank_index)
    heard = [tok.decode(d) for d in draft_token_ids(units, ids, tok, max_tokens=100)]
    assert heard[0].startswith("राम राम") and len(heard[1]) < len(heard[0])

    joint, scores, _ = model.generate(feats, feats_lengths, lang, max_new_tokens=40, ctc_weight=1.0)
    assert [tok.decode(h).strip() for h in joint] == heard
    assert all(s > -5 for s in scores)  # the CTC's own path: nearly certain
    alone, _, _ = model.generate(feats, feats_lengths, lang, max_new_tokens=40)
    assert [tok.decode(h).strip() for h in alone] != heard


def test_only_causal_llm_reaches_into_the_hugging_face_model():
    """The package's modules (the benchmarks, which swap in models of the papers' sizes, aside) use
    :class:`CausalLLM`'s own methods, never its Hugging Face model (``llm.model``) directly."""
    import re
    from pathlib import Path

    import espnet_llm_asr

    pkg = Path(espnet_llm_asr.__file__).parent
    pattern = re.compile(r"\bllm\.model\b")
    offenders = [str(p.relative_to(pkg)) for p in sorted(pkg.rglob("*.py"))
                 if p.name != "llm.py" and "benchmark" not in p.parts and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
