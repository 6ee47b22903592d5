"""The READMEs' relative links and images point at files of the repository (and at headings that
exist, for a link with an anchor), so that a moved or deleted file is caught here."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "indic" / "asr1"
TEMPLATE = ROOT / "egs2" / "TEMPLATE" / "llm_asr1"
DOCS = [ROOT / "README.md", RECIPE / "README.md", TEMPLATE / "README.md",
        ROOT / "espnet_llm_asr" / "benchmark" / "README.md"] + sorted(RECIPE.glob("RESULTS*.md"))

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.I)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(md: Path) -> set:
    text = _FENCE.sub("", md.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def broken_links(md: Path, root: Path = ROOT) -> List[str]:
    """Every relative link or image of ``md`` (outside code) whose file, or heading, is missing,
    or which leads out of ``root``."""
    text = _CODE.sub("", _FENCE.sub("", md.read_text(encoding="utf-8")))
    bad = []
    for target in [m.group(1) for m in _LINK.finditer(text)] + [m.group(1) for m in _HTML.finditer(text)]:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif root.resolve() not in dest.parents and dest != root.resolve():
            bad.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("md", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_readme_relative_links_resolve(md):
    assert md.is_file(), md
    assert broken_links(md) == [], f"{md.relative_to(ROOT)}: broken links"


def test_link_check_finds_broken_links(tmp_path):
    """The checker itself: a missing file, a missing image and a missing heading are reported;
    links in code, URLs and good links are not."""
    (tmp_path / "there.md").write_text("# A heading, with `code`\n", encoding="utf-8")
    (tmp_path / "fig.png").write_bytes(b"")
    md = tmp_path / "README.md"
    md.write_text("[ok](there.md) [ok](there.md#a-heading-with-code) ![ok](fig.png) [web](https://x.org/y)\n"
                  "[self](#top) `[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n# Top\n"
                  "[gone](gone.md) ![gone](images/gone.png) [anchor](there.md#nope)\n", encoding="utf-8")
    bad = broken_links(md, root=tmp_path)
    assert [b.split(":")[0] for b in bad] == ["gone.md", "images/gone.png", "there.md#nope"], bad


def test_stage_script_help_and_reference_list_every_option():
    """./llm_asr.sh --help prints every option of its options block with its default, and the
    stage reference (egs2/TEMPLATE/llm_asr1/README.md) names each of them."""
    import subprocess

    script = (TEMPLATE / "llm_asr.sh").read_text(encoding="utf-8")
    block = script.split("# ------------------------------------------------------------------ options", 1)[1]
    block = block.split("help_message=", 1)[0]
    options = re.findall(r"^([a-z_]+)=(\S*)", block, re.M)
    assert len(options) > 30 and ("continue_run", "false") in options
    proc = subprocess.run(["./llm_asr.sh", "--help"], cwd=RECIPE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Stages (asr.sh numbering" in proc.stdout
    reference = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    for name, default in options:
        assert f"  --{name}={default}" in proc.stdout, name
        assert f"--{name}`" in reference, name


# ------------------------------------------------ code and configs say what and why, not measurement logs
CONF = RECIPE / "conf"
#: the default's configs (conf/real/) are edited together with the recipe README's results
CONFIGS = sorted(p for p in CONF.rglob("*.yaml") if p.relative_to(CONF).parts[0] != "real")
MAX_HEADER_LINES = 6
_DATE = re.compile(r"\b20\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
#: paths outside the repository: a sibling checkout's shared files, or this machine's checkout
_OUTSIDE = re.compile(r"\.\./shared\b|/work/")


def config_header_lines(text: str) -> int:
    """How many comment lines a YAML config has before its first key."""
    count = 0
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            count += 1
        elif line.strip():
            break
    return count


def yaml_comments(text: str) -> List[str]:
    """The comments of a YAML file (a ``#`` that starts a line or follows a space, outside quotes)."""
    out = []
    for line in text.splitlines():
        quote = None
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1].isspace()):
                out.append(line[i:])
                break
    return out


def python_notes(source: str) -> List[str]:
    """The comments and docstrings of a Python module."""
    import ast
    import io
    import tokenize

    notes = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                notes.append(doc)
    return notes


def dated_notes(path: Path) -> List[str]:
    """The comments (and, for Python, docstrings) of ``path`` that carry a date such as 2026-12-01."""
    text = path.read_text(encoding="utf-8")
    notes = python_notes(text) if path.suffix == ".py" else yaml_comments(text)
    return [n.strip().splitlines()[0][:80] for n in notes if _DATE.search(n)]


def shipped_files() -> List[Path]:
    """What users get: the package (code, its READMEs and data), the recipe's configs and the READMEs."""
    package = [p for p in (ROOT / "espnet_llm_asr").rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and p.suffix in (".py", ".md", ".yaml", ".yml", ".txt", ".json", ".sh")]
    # RESULTS*.md are stage 13's output, written with the paths of the machine that ran it
    return sorted(package) + CONFIGS + [d for d in DOCS if not d.name.startswith("RESULTS")]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(CONF)) for p in CONFIGS])
def test_config_header_is_a_few_lines(path):
    """A recipe config says what it is and its result in at most MAX_HEADER_LINES comment lines before
    its first key (the numbers and their story live in the recipe README), and no comment of it is a
    dated measurement."""
    text = path.read_text(encoding="utf-8")
    assert config_header_lines(text) <= MAX_HEADER_LINES
    assert dated_notes(path) == []


def test_package_comments_and_docstrings_carry_no_dates():
    """Docstrings and comments of espnet_llm_asr/ say what and why; dated measurements belong in a README."""
    found = {str(p.relative_to(ROOT)): dated_notes(p) for p in sorted((ROOT / "espnet_llm_asr").rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}


def test_shipped_files_refer_to_nothing_outside_the_repository():
    """No shipped file names a path outside the repository (../shared/..., this machine's /work/...)."""
    found = {str(p.relative_to(ROOT)): sorted({m.group(0) for m in _OUTSIDE.finditer(p.read_text(encoding="utf-8"))})
             for p in shipped_files()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_note_checks_find_what_they_look_for(tmp_path):
    """The checks above on planted files: a long header, a dated comment and docstring, an outside path."""
    conf = tmp_path / "train.yaml"
    conf.write_text("# one\n#\n# two\n# three\n# four\n# five\n# six\n\nfrontend: mono  # x\n", encoding="utf-8")
    assert config_header_lines(conf.read_text(encoding="utf-8")) == 7
    conf.write_text("# short\nfrontend: mono\nlr: 0.1  # measured 2026-12-03: best\nurl: 'a #2026-12-03'\n",
                    encoding="utf-8")
    assert config_header_lines(conf.read_text(encoding="utf-8")) == 1
    assert dated_notes(conf) == ["# measured 2026-12-03: best"]
    code = tmp_path / "mod.py"
    code.write_text('"""Fast.\n\nMeasured 2026-11-30: 1.4x."""\nX = "2026-12-01"  # a value, not a note\n\n\n'
                    'def f():\n    """Ok."""\n    return 1  # since 2026-12-02\n', encoding="utf-8")
    assert dated_notes(code) == ["# since 2026-12-02", "Fast."]
    assert _OUTSIDE.findall("see ../shared/docs/reference.md and /work/main/tools, not ../../tools") == [
        "../shared", "/work/"]
