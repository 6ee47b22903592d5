#!/usr/bin/env bash
# Installs everything espnet_llm_asr needs, in ESPnet's manner (tools/).
#
#   tools/install.sh            # system packages + message catalogs (tools/l10n)
#                               # + tools/venv + editable package
#
# The venv gets exactly the versions of tools/requirements.lock (pip-compile
# output with hashes, refreshed by tools/refresh_lock.sh), so the install
# does not depend on what PyPI serves on the day.
#
# Idempotent: each step checks whether its result is already there, so a
# second run on an installed machine is a no-op that takes a few seconds.
# Environment:
#   PYTHON=python3.11   interpreter used to create tools/venv
#   SKIP_APT=1          do not touch system packages (non-root / managed hosts)
#                       nor download the message catalogs
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(dirname "${TOOLS_DIR}")"
VENV="${TOOLS_DIR}/venv"
PYTHON="${PYTHON:-python3}"
SCTK_BIN=/usr/lib/sctk/bin
APT_PACKAGES=(sctk espeak-ng sox aspell-hi aspell-mr aspell-ta aspell-te)

log() { echo "[tools/install.sh] $*"; }
die() { echo "[tools/install.sh] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. system
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "system packages present: ${APT_PACKAGES[*]}"
elif [ "${SKIP_APT:-0}" = 1 ]; then
    log "WARNING: SKIP_APT=1 and missing system packages: ${missing[*]}"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    log "installing system packages: ${missing[*]}"
    ${SUDO} apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive ${SUDO} apt-get install -y -qq "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
fi

# ---------------------------------------------------------------- 2. l10n
# Real sentences for conf/corpus_sentences.yaml: the translated program
# messages (gettext .mo catalogs) of LibreOffice's Debian language packs.
# The .debs are only unpacked into tools/l10n/ (catalogs under
# usr/lib/libreoffice/program/resource/<lang>/LC_MESSAGES/), never installed:
# their dependency libreoffice-common is not wanted.  The stamp
# tools/l10n/.packages lists "package version", one a line.
L10N_DIR="${TOOLS_DIR}/l10n"
L10N_PACKAGES=(libreoffice-l10n-hi libreoffice-l10n-mr libreoffice-l10n-ta libreoffice-l10n-te)
l10n_missing=()
for p in "${L10N_PACKAGES[@]}"; do
    grep -qs "^${p} " "${L10N_DIR}/.packages" || l10n_missing+=("$p")
done
if [ ${#l10n_missing[@]} -eq 0 ]; then
    log "message catalogs present in ${L10N_DIR}: ${L10N_PACKAGES[*]}"
elif [ "${SKIP_APT:-0}" = 1 ]; then
    log "WARNING: SKIP_APT=1 and ${L10N_DIR} lacks ${l10n_missing[*]} (conf/corpus_sentences.yaml needs them)"
else
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found: the message catalogs need a Debian-based system"
    l10n_tmp="$(mktemp -d "${TOOLS_DIR}/.l10n.tmp.XXXXXX")"
    trap 'rm -rf "${l10n_tmp}"' EXIT
    # as root, let apt's download sandbox user write there (else apt warns and downloads as root)
    [ "$(id -u)" -ne 0 ] || chown _apt "${l10n_tmp}" 2>/dev/null || true
    log "downloading and unpacking ${L10N_PACKAGES[*]} into ${L10N_DIR}"
    if ! (cd "${l10n_tmp}" && apt-get download -qq "${L10N_PACKAGES[@]}"); then
        log "apt-get download failed; retrying after apt-get update"
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        ${SUDO} apt-get update -qq || die "apt-get update failed"
        (cd "${l10n_tmp}" && apt-get download -qq "${L10N_PACKAGES[@]}") \
            || die "apt-get download ${L10N_PACKAGES[*]} failed"
    fi
    mkdir "${l10n_tmp}/tree"
    for deb in "${l10n_tmp}"/*.deb; do
        dpkg-deb -x "${deb}" "${l10n_tmp}/tree" || die "dpkg-deb -x ${deb} failed"
        echo "$(dpkg-deb -f "${deb}" Package) $(dpkg-deb -f "${deb}" Version)" >> "${l10n_tmp}/tree/.packages"
    done
    for p in "${L10N_PACKAGES[@]}"; do
        grep -qs "^${p} " "${l10n_tmp}/tree/.packages" || die "apt-get download did not give ${p}"
    done
    rm -rf "${L10N_DIR}"
    mv "${l10n_tmp}/tree" "${L10N_DIR}"
    rm -rf "${l10n_tmp}"
    trap - EXIT
    log "unpacked $(find "${L10N_DIR}" -name '*.mo' | wc -l) message catalogs into ${L10N_DIR}"
fi

# ---------------------------------------------------------------- 3. venv
if [ ! -x "${VENV}/bin/python" ]; then
    log "creating virtual environment ${VENV} with ${PYTHON}"
    "${PYTHON}" -m venv "${VENV}" || die "could not create ${VENV} (is ${PYTHON} installed with venv?)"
fi
VPY="${VENV}/bin/python"

# ---------------------------------------------------------------- 4. package
# Every package of the venv comes from the lock, at the exact version (and
# sha256) our CI passed with; then this package itself, editable, without
# dependencies. The lock was resolved for one Python minor version (its
# header says which): another one would resolve differently.
# Stamp = hash of setup.py + the lock: re-install only when either changed.
LOCK="${TOOLS_DIR}/requirements.lock"
[ -f "${LOCK}" ] || die "missing ${LOCK}"
stamp="${VENV}/.espnet_llm_asr.stamp"
want="$(cat "${ROOT_DIR}/setup.py" "${LOCK}" | sha1sum | cut -d' ' -f1)"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ] \
        && "${VPY}" -c "import espnet_llm_asr" >/dev/null 2>&1; then
    log "espnet_llm_asr already installed in ${VENV} (locked versions)"
else
    lock_py="$(sed -n 's/^# This file is autogenerated by pip-compile with Python \([0-9.]*\).*/\1/p' "${LOCK}")"
    venv_py="$("${VPY}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "${lock_py}" = "${venv_py}" ] || die "${LOCK} was resolved for Python ${lock_py}, ${VENV} has Python ${venv_py}: \
remove ${VENV} and run PYTHON=python${lock_py} $0, or resolve a lock for ${venv_py} with tools/refresh_lock.sh"
    log "installing the locked packages ($(grep -c '^[A-Za-z0-9_.-]*==' "${LOCK}") pinned, with hashes) into ${VENV}; first time takes minutes (torch is large)"
    "${VPY}" -m pip install -q --disable-pip-version-check --require-hashes -r "${LOCK}" \
        || die "pip install -r ${LOCK} failed"
    log "installing espnet_llm_asr (editable, no dependencies) into ${VENV}"
    "${VPY}" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --use-pep517 -e "${ROOT_DIR}" \
        || die "pip install --no-deps -e ${ROOT_DIR} failed"
    "${VPY}" -m pip check || die "the installed packages do not agree with their requirements (pip check above)"
    "${VPY}" -c "import espnet_llm_asr, torchaudio, espnet2.tasks.asr" \
        || die "espnet2.tasks.asr does not import in ${VENV} (traceback above)"
    echo "${want}" > "${stamp}"
fi

# ---------------------------------------------------------------- 5. activate
cat > "${TOOLS_DIR}/activate_python.sh" <<EOS
# Generated by tools/install.sh: source it to use tools/venv and sclite.
# shellcheck disable=SC1091
. "${VENV}/bin/activate"
export PATH="${SCTK_BIN}:\${PATH}"
export PYTHONNOUSERSITE=1
# nothing is ever fetched from a model hub at run time
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
EOS
log "wrote ${TOOLS_DIR}/activate_python.sh"
log "done"
