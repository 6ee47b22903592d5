# Sourced by llm_asr.sh: the toolkit's virtual environment, sclite, offline hub.
MAIN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [ ! -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
    echo "tools/activate_python.sh not found: run 'bash ${MAIN_ROOT}/tools/install.sh' first" >&2
    return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "${MAIN_ROOT}/tools/activate_python.sh"
export PYTHONIOENCODING=UTF-8 LC_ALL=C.UTF-8 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
