"""Which frozen encoder and LLM a projector was trained against: fingerprints and their manifest.

A trained projector (and its LoRA adapters) is only meaningful next to the
exact frozen models it was trained with: another revision or conversion of
the same architecture loads without complaint and decodes garbage.  Training
therefore writes ``frozen_models.yaml`` into the experiment dir (and stage
14 copies it into the pack)::

    llm:
      source: ../../../tools/models/gemma-3-270m    # as given to the task
      resolved: /abs/path/tools/models/gemma-3-270m # where it was at the time
      fingerprint:
        sha256: 3f1c...                             # over the files below
        files: {config.json: 9a0e..., model.safetensors: 51bd...}
    encoder: {...}

A fingerprint is the sha256 of a model dir's ``config.json`` and weight
files (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``), and of those
names: what decides the numbers the model computes, not its README or the
tokenizer's cache files.  Loading a model checks the models it finds
against the manifest (:func:`check_frozen_models`).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, Mapping, Optional

import yaml

from espnet_llm_asr.utils import atomic_write_text

MANIFEST = "frozen_models.yaml"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OVERRIDE = "--allow_frozen_mismatch"  # the command-line flag (Speech2Text(allow_frozen_mismatch=True))
_CHUNK = 1 << 22


class FrozenModelMismatch(RuntimeError):
    """A frozen model found differs from the one the projector was trained with."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir) -> Dict:
    """``{'sha256': ..., 'files': {name: sha256}}`` of a Hugging Face model dir (see the module doc).

    Raises FileNotFoundError for a dir without ``config.json``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json, not a Hugging Face model dir")
    names = ["config.json"] + sorted(p.name for p in model_dir.iterdir()
                                     if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    files = {name: _sha256(model_dir / name) for name in names}
    overall = hashlib.sha256("".join(f"{n}\t{h}\n" for n, h in files.items()).encode()).hexdigest()
    return {"sha256": overall, "files": files}


def frozen_model_sources(config: Mapping) -> Dict[str, str]:
    """{role: path or name as given} of the frozen models a training config names
    (``llm``; ``frontend_conf.encoder``, absent when trained on dumped features without one)."""
    sources = {}
    if config.get("llm"):
        sources["llm"] = str(config["llm"])
    encoder = (config.get("frontend_conf") or {}).get("encoder")
    if encoder:
        sources["encoder"] = str(encoder)
    return sources


def with_frozen_paths(config: Mapping, paths: Mapping[str, str]) -> Dict:
    """A copy of a training config with its frozen models ({role: path}, the roles of
    :func:`frozen_model_sources`) loaded from these paths."""
    unknown = sorted(set(paths) - {"llm", "encoder"})
    if unknown:
        raise ValueError(f"frozen model override {unknown}: the roles are llm and encoder")
    config = dict(config)
    if "llm" in paths:
        config["llm"] = paths["llm"]
    if "encoder" in paths:
        config["frontend_conf"] = {**(config.get("frontend_conf") or {}), "encoder": paths["encoder"]}
    return config


def local_dir(source: str) -> Optional[Path]:
    """The local model dir ``source`` names, or None (a hub name, or a dir that is not there)."""
    path = Path(source)
    return path if (path / "config.json").is_file() else None


def describe(sources: Mapping[str, str]) -> Dict[str, Dict]:
    """The manifest entries of these frozen models (fingerprinted where they are local dirs)."""
    entries = {}
    for role, source in sources.items():
        found = local_dir(source)
        entry = {"source": source}
        if found is None:
            entry["fingerprint"] = None  # a hub name: transformers' cache decides what it loads
        else:
            entry["resolved"] = str(found.resolve())
            entry["fingerprint"] = fingerprint(found)
        entries[role] = entry
    return entries


def write_manifest(out_dir, sources: Mapping[str, str]) -> Path:
    """Write ``<out_dir>/frozen_models.yaml`` for these models (atomically); returns its path."""
    path = Path(out_dir) / MANIFEST
    text = ("# the frozen models this projector was trained with (espnet_llm_asr.frozen_models)\n"
            + yaml.safe_dump(describe(sources), sort_keys=True, allow_unicode=True))
    atomic_write_text(path, text)
    return path


def read_manifest(path) -> Dict[str, Dict]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not a readable manifest ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected one mapping per frozen model (llm, encoder)")
    return data


def check_frozen_models(manifest_path, found: Mapping[str, str], allow_mismatch: bool = False) -> None:
    """Compare the frozen models about to be loaded ({role: path or name}) with the manifest.

    No manifest: a warning (an experiment dir from before manifests existed).
    A local model whose fingerprint differs from the manifest's: a
    :class:`FrozenModelMismatch` naming the model and both fingerprints, or,
    with ``allow_mismatch``, a warning.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        logging.warning(f"{manifest_path.parent}: no {MANIFEST}, so the frozen models "
                        f"{', '.join(f'{r}={s}' for r, s in found.items())} are not checked against "
                        "the ones this model was trained with")
        return
    manifest = read_manifest(manifest_path)
    for role, source in found.items():
        expected = (manifest.get(role) or {}).get("fingerprint")
        local = local_dir(source)
        if expected is None or local is None:
            continue  # trained or loaded by hub name: nothing local to compare
        actual = fingerprint(local)
        if actual["sha256"] == expected.get("sha256"):
            continue
        changed = sorted(n for n in set(actual["files"]) | set(expected.get("files") or {})
                         if actual["files"].get(n) != (expected.get("files") or {}).get(n))
        message = (f"frozen {role} {local}: fingerprint {actual['sha256'][:16]} differs from "
                   f"{expected.get('sha256', '?')[:16]}, the {role} this model was trained with "
                   f"({(manifest[role] or {}).get('source')}, {manifest_path}); files that differ: "
                   f"{', '.join(changed)}. Its projector would read another model's space; "
                   f"pass {OVERRIDE} to load it anyway")
        if not allow_mismatch:
            raise FrozenModelMismatch(message)
        logging.warning(message + f" ({OVERRIDE} given: loading)")


def locate(source: str, config_dir: Path, entry: Optional[Mapping] = None) -> str:
    """Where to load a frozen model (or file) named ``source`` in a config of ``config_dir``.

    In this order: ``source`` as it is (relative to the working dir, as the
    recipe trained it), relative to the config's dir (a pack), the manifest
    entry's ``resolved`` absolute path (an experiment dir used from
    elsewhere); otherwise ``source`` unchanged (a hub name, or an error from
    the loader that names it).
    """
    if Path(source).exists():
        return source
    beside = Path(config_dir) / source
    if not Path(source).is_absolute() and beside.exists():
        return str(beside)
    resolved = (entry or {}).get("resolved")
    if resolved and Path(resolved).exists():
        return str(resolved)
    return source


def relative_path(path, start) -> str:
    """``path`` relative to ``start`` (posix separators)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
