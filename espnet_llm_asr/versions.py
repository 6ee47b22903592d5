"""Checks of installed dependency versions, run by ``import espnet_llm_asr``.

torch and torchaudio must be a pair built together: torchaudio's C++
library is linked against one torch release, and next to another one it
fails to load (torchaudio 2.11.1 beside torch 2.12.1:
``undefined symbol: torch_exception_get_what_without_backtrace``).  espnet
imports torchaudio in ``espnet2.tasks.*``, so such a venv fails with dozens
of tracebacks far from the cause.  Here the two versions are compared from
the installed distributions' metadata, without importing either (cheap,
and it works when torchaudio's library is the thing that does not load),
and a mismatch is one clear error that names both versions and the fix.

``ESPNET_LLM_ASR_SKIP_VERSION_CHECK=1`` skips the check (a source build of
torch that does match, say).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from typing import Callable, Optional

SKIP_ENV = "ESPNET_LLM_ASR_SKIP_VERSION_CHECK"


class DependencyVersionError(ImportError):
    """The installed dependencies cannot work together."""


def _minor(version: str) -> Optional[tuple]:
    """``"2.11.0+cu130"`` -> ``(2, 11)``; None when not of that form."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def torch_pair_problem(torch_version: str, torchaudio_version: str) -> Optional[str]:
    """One line saying why the pair cannot work, or None when it can.

    The rule is PyTorch's release practice: torchaudio X.Y is built for
    torch X.Y, so the two must share major and minor version.
    """
    t, a = _minor(torch_version), _minor(torchaudio_version)
    if t is None or a is None or t == a:
        return None
    want = f"{t[0]}.{t[1]}"
    return (
        f"torch {torch_version} and torchaudio {torchaudio_version} are not a pair built "
        f"together (torchaudio's C++ library needs the torch of its own minor version, "
        f"so espnet2 fails to import); fix: run tools/install.sh, which installs the locked "
        f"pair, or `pip install 'torchaudio=={want}.*'` (or a torch matching torchaudio); "
        f"{SKIP_ENV}=1 skips this check"
    )


def _installed(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_dependency_versions(version_of: Callable[[str], Optional[str]] = _installed) -> None:
    """Raise :class:`DependencyVersionError` when torch and torchaudio do not match.

    Missing packages are not this check's business (pip reports them).
    """
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    torch_version, torchaudio_version = version_of("torch"), version_of("torchaudio")
    if torch_version is None or torchaudio_version is None:
        return
    problem = torch_pair_problem(torch_version, torchaudio_version)
    if problem:
        raise DependencyVersionError(problem)
