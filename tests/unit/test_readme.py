"""The README's config-key table is the one generated from manifest.yaml."""

from __future__ import annotations

from pathlib import Path

from lem_dcbm.config_doc import BEGIN, END, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_config_table_matches_manifest() -> None:
    text = README.read_text()
    start = text.index(BEGIN)
    end = text.index(END) + len(END)
    assert text[start:end] == markdown_table(), (
        "README config table is stale: regenerate it with python -m lem_dcbm.config_doc"
    )


def test_every_manifest_key_is_in_the_readme() -> None:
    import yaml

    manifest = yaml.safe_load((README.parent / "manifest.yaml").read_text())
    text = README.read_text()
    missing = [key for key in manifest["config"] if f"| `{key}` |" not in text]
    assert not missing


def test_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    commands = text.index("## The two commands")
    assert text.index("./scripts/demo") > commands
    assert text.index("./scripts/test") > commands
    assert "scripts/test" in (README.parent / ".ci" / "run").read_text()
