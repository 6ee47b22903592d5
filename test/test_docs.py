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
