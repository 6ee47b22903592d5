"""Foundation checks: the package imports offline and quietly, registers its
components with ESPnet, and CI runs exactly the README's test command."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
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


def test_registration_is_idempotent(monkeypatch):
    """Registering again (also past the once-only flag) leaves ESPnet's choices as they were,
    and registering before ESPnet's ASR task is imported installs one import hook, not two."""
    import espnet_llm_asr  # noqa: F401
    from espnet2.tasks.asr import frontend_choices

    from espnet_llm_asr import registry
    from espnet_llm_asr.frontend import FRONTEND_CLASSES

    before = dict(frontend_choices.classes)
    assert set(FRONTEND_CLASSES) <= set(before)
    registry.register_all()
    registry.register_all()
    monkeypatch.setattr(registry, "_REGISTERED", False)  # _register_into itself, twice
    registry.register_all()
    registry.register_all()
    assert registry.is_registered()
    assert frontend_choices.classes == before
    assert list(frontend_choices.classes) == list(before)  # nothing appended again either
    assert len(frontend_choices.choices()) == len(set(frontend_choices.choices()))

    # the import-hook path: as if espnet2.tasks.asr were not imported yet
    monkeypatch.setattr(registry, "_REGISTERED", False)
    monkeypatch.delitem(sys.modules, registry._TARGET)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    registry.register_all()
    registry.register_all()
    assert sys.meta_path.count(registry._HOOK) == 1 and sys.meta_path[0] is registry._HOOK
    assert not registry.is_registered()
    registry._remove_hook()

    # a second class under a taken name is refused, not swapped in
    name = next(iter(FRONTEND_CLASSES))
    with pytest.raises(RuntimeError, match=f"already has '{name}'"):
        registry._add_choice(frontend_choices, name, type("Other", (), {}))
    assert frontend_choices.classes == before


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
    assert names == {"egs2", "espnet_llm_asr", "tools", "test", "setup.py", "README.md", "LICENSE"}, names
    # the license setup.py declares, in full
    assert 'license="Apache-2.0"' in (ROOT / "setup.py").read_text(encoding="utf-8")
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text and len(license_text.split()) > 1500


def _marks(decorators) -> set:
    """Names of the ``pytest.mark.<name>`` among decorator (or pytestmark) expressions."""
    import ast

    names = set()
    for node in decorators:
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute)
                    and sub.value.attr == "mark"):
                names.add(sub.attr)
    return names


def test_tests_that_load_the_real_checkpoints_are_marked_real_models():
    """test/pytest.ini declares the markers; a test reading tools/models (through test_real_models'
    require, the model dirs, or a helper of its module that does) is marked real_models, so
    that ``-m "not real_models"`` runs without the checkpoints."""
    import ast
    import configparser

    ini = configparser.ConfigParser()
    assert ini.read(ROOT / "test" / "pytest.ini")
    assert {line.split(":")[0].strip() for line in ini["pytest"]["markers"].strip().splitlines()} >= {
        "slow", "real_models"}
    real_names = {"require", "GEMMA_DIR", "WHISPER_DIR", "MODELS_DIR"}
    marked = []
    for path in sorted((ROOT / "test").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_marks = _marks([n.value for n in tree.body if isinstance(n, ast.Assign)
                               and any(getattr(t, "id", None) == "pytestmark" for t in n.targets)])
        funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

        def uses(func, seen=()):
            names = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
            helpers = [funcs[n] for n in names if n in funcs and n not in seen and not n.startswith("test_")]
            return bool(names & real_names) or any(uses(h, seen + (func.name,)) for h in helpers)

        for name, func in funcs.items():
            if name.startswith("test_") and uses(func):
                assert "real_models" in module_marks | _marks(func.decorator_list), f"{path.name}::{name}"
                marked.append(name)
    assert "test_gemma_chat_template" in marked and "test_lora_on_gemma3_attention" in marked


def test_installer_scripts_parse():
    scripts = ["install.sh", "install_models.sh", "refresh_lock.sh"]
    for script in [ROOT / "tools" / name for name in scripts] + [ROOT / ".ci" / "run"]:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
