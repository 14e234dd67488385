"""The licence the README and the package metadata name is the one shipped beside them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_file_is_the_apache_2_0_text_the_readme_and_metadata_name() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "Apache-2.0: see [LICENSE](LICENSE)." in (ROOT / "README.md").read_text("utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    # An SPDX expression with the file named (PEP 639); the TOML table form is deprecated.
    assert 'license = "Apache-2.0"' in pyproject.splitlines()
    assert 'license-files = ["LICENSE"]' in pyproject.splitlines()
