"""Foundation checks: the package imports offline and quietly, registers its
components with ESPnet, and CI runs exactly the README's test command."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Any attempt to open a network connection during the import raises.
_NO_NETWORK_IMPORT = r"""
import socket
def _refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args}")
socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
import espnet_llm_asr
import espnet2.tasks.asr as asr
print("FRONTENDS=" + ",".join(sorted(asr.frontend_choices.classes)))
"""


def test_import_is_offline_and_quiet():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK_IMPORT],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    # nothing but our own probe line on stdout
    assert len(lines) == 1 and lines[0].startswith("FRONTENDS="), proc.stdout
    assert "network access attempted" not in proc.stderr


def test_registration_in_espnet_frontend_choices():
    import espnet_llm_asr  # noqa: F401
    from espnet2.tasks.asr import frontend_choices

    from espnet_llm_asr.frontend import FRONTEND_CLASSES
    from espnet_llm_asr.projectors import PROJECTOR_CLASSES

    # every projector is an ESPnet frontend under the same name
    assert set(PROJECTOR_CLASSES) <= set(FRONTEND_CLASSES)
    for name, cls in FRONTEND_CLASSES.items():
        assert frontend_choices.get_class(name) is cls
    # ESPnet's own frontends are still there
    assert "default" in frontend_choices.classes


def test_registration_is_idempotent():
    from espnet_llm_asr.registry import register_all

    register_all()
    register_all()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert m, "README.md lacks the marked test command block"
    command = m.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci.splitlines(), f"{command!r} not a line of .ci/run"


def test_top_level_layout():
    names = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    names -= {"build", "dist"}  # local build artefacts, ignored by git
    names = {n for n in names if not n.endswith(".egg-info")}
    assert names == {"egs2", "espnet_llm_asr", "tools", "test", "setup.py", "README.md"}, names


def test_installer_scripts_parse():
    scripts = ["install.sh", "install_models.sh", "refresh_lock.sh"]
    for script in [ROOT / "tools" / name for name in scripts] + [ROOT / ".ci" / "run"]:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
