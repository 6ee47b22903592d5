"""Pack a trained system into one self-describing directory (stage 14 of llm_asr.sh).

    python -m espnet_llm_asr.bin.pack_model --exp_dir exp/asr_train_cif_smear \\
        --model_file valid.acc.ave.pth --decode_tag decode_valid.acc.ave

writes ``<exp_dir>/pack/`` (or ``--out_dir``)::

    README.md            model card: what it is, sclite results, environment, usage, upload
    config.yaml          the training config, its model paths relative to the pack
    model.pth            the trainable weights (projector, LoRA): the checkpoint stage 12 decoded
    decode.yaml          the decoding config of the results (stage 12's), the loaders' defaults
    frozen_models.yaml   the frozen models it needs: as given, and fingerprints
    lang_list            language codes, one a line
    frozen/llm/, frozen/encoder/   frozen models small enough to travel with it (the toy ones)

A frozen model dir up to ``--embed_max_mb`` goes into the pack; a larger
one is referenced (its path relative to the pack, the manifest's name and
fingerprint).  The fingerprints are the experiment's own
(``<exp_dir>/frozen_models.yaml``, written when training started); packing
refuses models that no longer match them.  The pack is built under a
temporary name and renamed into place, so a failed packing leaves the
previous pack (if any) as it was.  Load it with
``Speech2Text.from_pretrained(pack)`` or ``python -m espnet_llm_asr.bin.transcribe``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from espnet_llm_asr.bin.make_results import collect_exp, environment_lines, score_table_lines
from espnet_llm_asr.frozen_models import (MANIFEST, check_frozen_models, describe, frozen_model_sources,
                                          local_dir, locate, read_manifest, relative_path,
                                          with_frozen_paths)
from espnet_llm_asr.inference import PACK_DECODE_CONFIG, PACK_MODEL_FILE
from espnet_llm_asr.utils import atomic_write_text

EMBED_MAX_MB = 64.0


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def _frozen_entries(exp_dir: Path, conf: Dict) -> Dict[str, Dict]:
    """The experiment's manifest entries, checked against the models as they are now."""
    sources = frozen_model_sources(conf)
    manifest_path = exp_dir / MANIFEST
    if not manifest_path.is_file():
        logging.warning(f"{exp_dir}: no {MANIFEST} (trained before manifests were written): the pack "
                        "records the frozen models' fingerprints as they are now")
        entries = describe({r: locate(s, exp_dir) for r, s in sources.items()})
        for role, entry in entries.items():
            entry["source"] = sources[role]  # as given, not where it was found
        return entries
    manifest = read_manifest(manifest_path)
    found = {r: locate(s, exp_dir, manifest.get(r)) for r, s in sources.items()}
    check_frozen_models(manifest_path, found)  # the models changed since training: refuse
    return {r: dict(manifest.get(r) or describe({r: found[r]})[r]) for r in sources}


def _results_lines(exp_dir: Path, decode_tag: Optional[str], decode: Dict) -> List[str]:
    results = [r for r in collect_exp(exp_dir) if decode_tag is None or r.decode_tag == decode_tag]
    if not results:
        return ["No scored decoding was found (stage 13) when this pack was made.", ""]
    ctc = float(decode.get("ctc_weight") or 0.0)
    how = f"joint with the CTC (weight {ctc:g})" if ctc > 0 else "by the LLM alone"
    lines = [f"sclite, decoded {how} (`{PACK_DECODE_CONFIG}`), `{results[0].decode_tag}`:", ""]
    return lines + score_table_lines(results, name=lambda r: r.test_set)


def model_card(name: str, conf: Dict, entries: Dict[str, Dict], langs: List[str], results: List[str]) -> str:
    lora = bool((conf.get("llm_conf") or {}).get("lora_conf"))
    lang_arg = f" --lang {langs[0]}" if langs else ""
    rows = [f"|{role}|`{e['source']}`|{('`' + e['embedded'] + '`') if e.get('embedded') else 'not included'}|"
            f"`{(e.get('fingerprint') or {}).get('sha256', 'hub name: not fingerprinted')}`|"
            for role, e in entries.items()]
    lines = [
        f"# {name}", "",
        f"An espnet_llm_asr speech recognizer: the frozen speech encoder "
        f"`{(entries.get('encoder') or {}).get('source', 'none (dumped features)')}`, a trained "
        f"`{conf.get('frontend')}` projector, and the frozen LLM `{(entries.get('llm') or {}).get('source')}`"
        + (" with trained LoRA adapters" if lora else "")
        + f". Languages: {', '.join(langs) if langs else 'any (no language ids)'}.", "",
        "## Frozen models", "",
        "The projector reads one encoder's vectors and writes into one LLM's embedding space: it needs "
        f"exactly these models (`{MANIFEST}`; loading checks the sha256 of their `config.json` and weight "
        "files and stops on a mismatch unless `--allow_frozen_mismatch` is given).", "",
        "|role|trained with|in this pack|sha256|", "|---|---|---|---|", *rows, "",
        "## Results", "", *results,
        *environment_lines(), "",
        "## Usage", "",
        "```bash",
        f"python -m espnet_llm_asr.bin.transcribe --model <this dir>{lang_arg} a.wav b.flac   # file<TAB>text",
        f"python -m espnet_llm_asr.bin.transcribe --model <this dir>{lang_arg} --json a.wav   # with gates, scores",
        "```", "",
        "```python",
        "from espnet_llm_asr.inference import Speech2Text",
        "s2t = Speech2Text.from_pretrained(\"<this dir>\")  # decoding options: decode.yaml, overridable",
        f"print(s2t(\"a.wav\"{', lang=' + repr(langs[0]) if langs else ''}).text)",
        "```", "",
        "A frozen model not included here is looked for where the config names it, then where the "
        "manifest saw it; `--frozen_model llm=DIR` (`Speech2Text(frozen_paths={'llm': DIR})`) points "
        "elsewhere.", "",
        "## Sharing", "",
        "The directory is a Hugging Face model repository as it is:", "",
        "```bash",
        "hf upload <user>/<repo> <this dir> .",
        "```", "",
    ]
    return "\n".join(lines)


def pack(exp_dir, model_file: str = "valid.acc.ave.pth", out_dir=None, decode_tag: Optional[str] = None,
         embed_max_mb: float = EMBED_MAX_MB) -> Path:
    """Write the pack of ``exp_dir`` (see the module doc); returns its dir."""
    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / "pack"
    config_path, model_path = exp_dir / "config.yaml", exp_dir / model_file
    for path, what in ((config_path, "the training config"), (model_path, "the checkpoint to pack")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found ({what}): train (stage 11) and average first")
    conf = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    entries = _frozen_entries(exp_dir, conf)
    decode_config = exp_dir / decode_tag / "decode_config.yaml" if decode_tag else None
    decode = {}
    if decode_config is not None and decode_config.is_file():
        decode = yaml.safe_load(decode_config.read_text(encoding="utf-8")) or {}
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        sources, paths = frozen_model_sources(conf), {}
        for role, entry in entries.items():
            found = local_dir(locate(sources[role], exp_dir, entry))
            if found is not None and _dir_mb(found) <= embed_max_mb:
                shutil.copytree(found, tmp / "frozen" / role)
                entry["embedded"] = paths[role] = f"frozen/{role}"
            else:
                entry["embedded"] = None
                paths[role] = relative_path(found, out_dir) if found is not None else sources[role]
        conf = with_frozen_paths(conf, paths)
        langs = []
        if conf.get("lang_list"):
            lang_list = Path(locate(conf["lang_list"], exp_dir))
            langs = [ln.strip() for ln in lang_list.read_text(encoding="utf-8").splitlines() if ln.strip()]
            shutil.copyfile(lang_list, tmp / "lang_list")
            conf["lang_list"] = "lang_list"
        shutil.copyfile(model_path, tmp / PACK_MODEL_FILE)
        if decode_config is not None and decode_config.is_file():
            shutil.copyfile(decode_config, tmp / PACK_DECODE_CONFIG)
        (tmp / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding="utf-8")
        (tmp / MANIFEST).write_text(
            f"# the frozen models of {exp_dir.name}, as trained (espnet_llm_asr.frozen_models)\n"
            + yaml.safe_dump(entries, sort_keys=True, allow_unicode=True), encoding="utf-8")
        embedded = {r: str(tmp / e["embedded"]) for r, e in entries.items() if e.get("embedded")}
        check_frozen_models(tmp / MANIFEST, embedded)  # the copies are the models trained with
        card = model_card(exp_dir.name, conf, entries, langs, _results_lines(exp_dir, decode_tag, decode))
        atomic_write_text(tmp / "README.md", card)
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = _dir_mb(out_dir)
    logging.info(f"packed {exp_dir} ({model_file}) into {out_dir} ({size:.1f} MB; embedded: "
                 f"{', '.join(r for r, e in entries.items() if e.get('embedded')) or 'none'})")
    return out_dir


def main(cmd=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--model_file", default="valid.acc.ave.pth", help="checkpoint inside --exp_dir")
    p.add_argument("--decode_tag", default=None, help="decode dir whose config and scores the pack carries")
    p.add_argument("--out_dir", default=None, help="default: <exp_dir>/pack")
    p.add_argument("--embed_max_mb", type=float, default=EMBED_MAX_MB,
                   help="frozen model dirs up to this size are copied into the pack")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(cmd)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        pack(args.exp_dir, args.model_file, args.out_dir, args.decode_tag, args.embed_max_mb)
    except (OSError, ValueError, RuntimeError) as e:
        if cmd is not None:
            raise
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
