"""The decoding options, defined once (espnet_llm_asr.decoding_options), and the run's recorded
decoding config: stage 12 records it with ``llm_asr_inference --print_config``, and
``Speech2Text(exp_dir)`` decodes with it as the run did, joint CTC included."""
from __future__ import annotations

import inspect
import logging
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tiny_setup import ROOT, UTTS, make_data_dir, make_tiny_models, train_in_process

LLM_ASR_SH = ROOT / "egs2" / "TEMPLATE" / "llm_asr1" / "llm_asr.sh"


# ---------------------------------------------------------------- the options, defined once
def test_one_definition_gives_generate_speech2text_and_the_command_line_their_defaults():
    """generate's keywords, Speech2Text's and the command line's --options (with help) are the
    DecodingOptions fields, with its defaults."""
    import dataclasses

    from espnet_llm_asr.bin.llm_asr_inference import get_parser
    from espnet_llm_asr.decoding_options import DecodingOptions
    from espnet_llm_asr.inference import Speech2Text
    from espnet_llm_asr.model import LLMASRModel

    defaults = DecodingOptions()
    fields = dataclasses.fields(DecodingOptions)
    assert len(fields) >= 12
    generate = inspect.signature(LLMASRModel.generate).parameters
    init = inspect.signature(Speech2Text.__init__).parameters
    parser = get_parser(data_required=False)
    assert DecodingOptions.from_namespace(parser.parse_args([])) == defaults
    helps = {a.dest: a.help for a in parser._actions}
    for f in fields:
        assert generate[f.name].default == init[f.name].default == getattr(defaults, f.name), f.name
        assert generate[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert f.metadata["help"] and helps[f.name].startswith(f.metadata["help"].split(" (")[0][:30]), f.name


def test_values_are_read_from_strings_and_bad_ones_are_named():
    from espnet_llm_asr.decoding_options import DecodingOptionError, DecodingOptions

    opts = DecodingOptions(num_beams="4", max_tokens_per_second="null", compile_decoding="false",
                           ctc_pre_beam="all", ctc_weight=1)
    assert (opts.num_beams, opts.max_tokens_per_second, opts.compile_decoding, opts.ctc_pre_beam) == \
        (4, None, False, "all")
    assert isinstance(opts.ctc_weight, float) and DecodingOptions(ctc_pre_beam="auto").ctc_pre_beam is None
    assert DecodingOptions.from_mapping(yaml.safe_load(opts.to_yaml()), "printed") == opts
    for bad, option in ((dict(num_beams=0), "num_beams"), (dict(num_beams=True), "num_beams"),
                        (dict(ctc_weight=1.5), "ctc_weight"), (dict(ctc_pre_beam=0), "ctc_pre_beam"),
                        (dict(max_tokens_per_second=0), "max_tokens_per_second"),
                        (dict(cache_implementation="paged"), "cache_implementation"),
                        (dict(compile_decoding=True), "compile_decoding")):
        with pytest.raises(DecodingOptionError, match=f"^{option}: ") as err:
            DecodingOptions(**bad)
        assert err.value.option == option
    with pytest.raises(TypeError, match=r"unknown decoding option\(s\) \['beams'\]"):
        DecodingOptions().replace(beams=2)


def test_print_config_merges_the_config_and_the_command_line(tmp_path, capsys):
    """--print_config: the --config YAML's options, the command line's over them, the rest at their
    defaults, without a model or data arguments; a bad value in the YAML names the file."""
    from espnet_llm_asr.bin.llm_asr_inference import main
    from espnet_llm_asr.decoding_options import DecodingOptions

    conf = tmp_path / "decode.yaml"
    conf.write_text("# a decoding config\nnum_beams: 2\nmax_new_tokens: 7\nctc_weight: 0.2\nbatch_size: 4\n",
                    encoding="utf-8")
    main(["--print_config", "--config", str(conf), "--ctc_weight", "0.6", "--ctc_pre_beam", "all"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed) == list(DecodingOptions.names())  # every option, none of the program's own
    assert printed == dict(DecodingOptions().to_dict(), num_beams=2, max_new_tokens=7, ctc_weight=0.6,
                           ctc_pre_beam="all")
    conf.write_text("num_beams: 2\nctc_weight: 2\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=f"{conf}: --ctc_weight: must be in"):
        main(["--print_config", "--config", str(conf)])
    with pytest.raises(SystemExit, match="--compile_decoding: true needs cache_implementation: static"):
        main(["--print_config", "--compile_decoding", "true"])


# ---------------------------------------------------------------- the recorded config
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smear_moe model trained 2 steps with the auxiliary CTC (so that it decodes jointly)."""
    root = tmp_path_factory.mktemp("recorded")
    data = make_data_dir(root)
    models = make_tiny_models(root, [t for _, _, t, _, _ in UTTS])
    exp = train_in_process((root, data, models), "smear_moe", "exp_joint", "ctc_weight=1.0", "ctc_blank_bias=5.0")
    return root, data, exp


def _record_decoding(exp, tag: str, config, inference_args: str = ""):
    """Record a decoding as the recipe's stage 12 does: its own lines of llm_asr.sh, from the
    mkdir of the decode dir to the mv of decode_config.yaml, run by bash."""
    script = LLM_ASR_SH.read_text(encoding="utf-8")
    stage = script[script.index("stage 12\n"):].splitlines()
    start = next(i for i, line in enumerate(stage) if line.strip().startswith('mkdir -p "${asr_exp}/${inference_tag}"'))
    end = next(i for i, line in enumerate(stage) if line.strip().startswith("mv ") and "decode_config.yaml" in line)
    lines = "\n".join(stage[start: end + 1])
    assert "--print_config" in lines
    env = dict(os.environ, python=shlex.quote(sys.executable), asr_exp=str(exp), inference_tag=tag,
               inference_config=str(config), inference_args=inference_args, PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", lines], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exp / tag / "decode_config.yaml"


def _decode_data_dir(data, exp, model_file, out, config, inference_args: str):
    """bin/llm_asr_inference as stage 12 runs it: {token, score} per utterance."""
    from espnet_llm_asr.bin import llm_asr_inference as inf

    inf.main(["--config", str(config), "--asr_train_config", str(exp / "config.yaml"),
              "--asr_model_file", str(model_file), "--batch_size", "3",
              "--data_path_and_name_and_type", f"{data / 'wav.scp'},speech,sound",
              "--data_path_and_name_and_type", f"{data / 'utt2lang'},lang,text",
              "--output_dir", str(out), *shlex.split(inference_args)])
    read = {}
    for name in ("token", "score"):
        for line in (out / "1best_recog" / name).read_text(encoding="utf-8").splitlines():
            uid, *values = line.split()
            read.setdefault(uid, {})[name] = values
    return read


def test_speech2text_of_the_exp_dir_decodes_as_the_recorded_run(trained, tmp_path, caplog):
    """Stage 12 recorded conf (ctc_weight 0.3) + --ctc_weight 0.6: Speech2Text(exp_dir) gives the
    tokens and joint scores of bin/llm_asr_inference run so, not the LLM alone's; an explicit
    argument overrides the recorded option, the others stay."""
    from espnet_llm_asr.inference import Speech2Text, find_model_file

    root, data, exp = trained
    conf = tmp_path / "decode_joint.yaml"
    conf.write_text("num_beams: 1\nmax_new_tokens: 6\nctc_weight: 0.3\n", encoding="utf-8")
    args = "--ctc_weight 0.6 --max_tokens_per_second 20"
    recorded = _record_decoding(exp, "decode_joint", conf, args)
    text = recorded.read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# {conf} {args}"  # what make_results names
    assert yaml.safe_load(text)["ctc_weight"] == 0.6 and yaml.safe_load(text)["max_new_tokens"] == 6

    cli = _decode_data_dir(data, exp, find_model_file(exp), tmp_path / "dec", conf, args)
    wavs = [root / "wav" / f"{uid}.wav" for uid, *_ in UTTS]
    langs = [lang for _, lang, *_ in UTTS]
    with caplog.at_level(logging.INFO):
        s2t = Speech2Text(exp)
    assert s2t.decode_config == recorded and str(recorded) in caplog.text
    assert (s2t.options.ctc_weight, s2t.options.max_new_tokens, s2t.options.max_tokens_per_second) == (0.6, 6, 20)
    hyps = s2t.batch(wavs, langs)
    for (uid, *_), hyp in zip(UTTS, hyps):
        assert [int(t) for t in cli[uid]["token"]] == hyp.tokens, uid
        assert float(cli[uid]["score"][0]) == pytest.approx(hyp.score, abs=1e-4), uid

    llm_alone = Speech2Text(exp, decode_config=False, max_new_tokens=6, max_tokens_per_second=20).batch(wavs, langs)
    assert any(abs(a.score - b.score) > 1e-3 for a, b in zip(llm_alone, hyps))  # the CTC took part
    caplog.clear()
    with caplog.at_level(logging.INFO):
        overridden = Speech2Text(exp, ctc_weight=0.0)
    assert "ctc_weight as given" in caplog.text
    assert (overridden.options.ctc_weight, overridden.options.max_new_tokens) == (0.0, 6)
    again = overridden.batch(wavs, langs)
    assert [h.tokens for h in again] == [h.tokens for h in llm_alone]
    np.testing.assert_allclose([h.score for h in again], [h.score for h in llm_alone], rtol=1e-5)


@pytest.mark.slow
def test_the_latest_recorded_decoding_or_the_one_named(trained, tmp_path):
    """decode_config None: the most recently modified <exp>/*/decode_config.yaml; a decode tag or
    a path names one; False: none; a name that is none is an error."""
    from espnet_llm_asr.inference import latest_decode_config, resolve_decode_config

    _, _, exp = trained
    records = {}
    for tag, beams in (("decode_a", 1), ("decode_b", 2)):
        conf = tmp_path / f"{tag}.yaml"
        conf.write_text(f"num_beams: {beams}\n", encoding="utf-8")
        records[tag] = _record_decoding(exp, tag, conf)
    for newer, older in (("decode_a", "decode_b"), ("decode_b", "decode_a")):
        mtime = records[older].stat().st_mtime
        os.utime(records[newer], (mtime + 10, mtime + 10))
        assert latest_decode_config(exp) == records[newer] == resolve_decode_config(exp, None)
    assert resolve_decode_config(exp, "decode_a") == records["decode_a"]
    assert resolve_decode_config(exp, exp / "decode_a") == records["decode_a"]
    assert resolve_decode_config(None, records["decode_b"]) == records["decode_b"]
    assert resolve_decode_config(exp, False) is None and resolve_decode_config(None, None) is None
    assert latest_decode_config(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="decode_nope"):
        resolve_decode_config(exp, "decode_nope")


def test_a_bad_option_in_the_recorded_config_names_the_file(trained):
    from espnet_llm_asr.inference import Speech2Text

    _, _, exp = trained
    bad = exp / "decode_bad" / "decode_config.yaml"
    bad.parent.mkdir(exist_ok=True)
    for content, what in (("# conf/x.yaml\nnum_beam: 2\n", r"unknown decoding option\(s\) \['num_beam'\]"),
                          ("# conf/x.yaml\nctc_weight: 1.5\n", "ctc_weight: must be in"),
                          ("num_beams: [1\n", "not a YAML")):
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=what) as err:
            Speech2Text(exp, decode_config="decode_bad")
        assert str(bad) in str(err.value)
    bad.unlink()
    bad.parent.rmdir()
