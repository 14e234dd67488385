"""Every relative link in the project's markdown resolves: to a file, and to a heading."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: ``[text](target)`` (text may span lines; an image's ``![alt](src)`` too) and
#: ``[label]: target`` reference definitions.
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_NAMED_DOC = re.compile(r"^`[\w.-]+(?:/[\w.-]+)*\.md(?:#[\w-]+)?`$")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    """The markdown files under version control (a checkout's .venv is not the project's)."""
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).exists()]


def links(text: str) -> list[str]:
    """Link targets of a markdown text, outside code blocks and code spans.

    A code span that names a markdown file (`` `docs/install.md` ``) counts as a link:
    a reader follows it the same way.
    """
    without_blocks = _FENCE.sub("", text)
    named = [span for span in _CODE_SPAN.findall(without_blocks) if _NAMED_DOC.match(span)]
    prose = _CODE_SPAN.sub("", without_blocks)
    return _INLINE.findall(prose) + _REFERENCE.findall(prose) + [s.strip("`") for s in named]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    found = set()
    for heading in _HEADING.findall(text):
        plain = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        found.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``file: target (why)`` for each relative link of ``path`` that does not resolve."""
    broken = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...: not a file of this repository
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if file_part and not resolved.exists() and (root / file_part).exists():
            resolved = (root / file_part).resolve()  # a path named from the repository's root
        name = path.relative_to(root)
        if not resolved.exists():
            broken.append(f"{name}: {target} (no such file)")
        elif not resolved.is_relative_to(root):
            broken.append(f"{name}: {target} (outside the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{name}: {target} (no such heading)")
    return broken


def test_the_checker_finds_a_broken_link(tmp_path: Path) -> None:
    text = "see [the spec](../spec/x.md#a), `[no](code.md)`, [web](https://e.org), `spec/y.md`"
    assert links(text) == ["../spec/x.md#a", "https://e.org", "spec/y.md"]
    (tmp_path / "a.md").write_text(text)
    assert [line.split(" ")[1] for line in broken_links(tmp_path / "a.md", tmp_path)] == [
        "../spec/x.md#a",
        "spec/y.md",
    ]
    assert "the-container-test" in anchors(ROOT / "docs" / "install.md")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []
