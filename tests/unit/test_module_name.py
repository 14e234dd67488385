"""One module name under EVerest, the same in every config, doc, example and script."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lem_dcbm import MODULE_NAME
from lem_dcbm.config import MODULE_NAMES, load_everest_config_file
from lem_dcbm.everest.manager import DEFAULT_MODULE_NAME

ROOT = Path(__file__).resolve().parents[2]
#: What an integrator reads, copies or runs (tests may use the accepted aliases on purpose).
SHIPPED = ("config", "docs", "scripts", "lem_dcbm", "bench", "tests/support")
SHIPPED_FILES = ("README.md", "compose.yaml", "Dockerfile", "module.py", "manifest.yaml")
#: ``module: X`` (YAML), ``"module": "X"`` (Python, JSON) and ``modules/X`` (a folder).
_NAMED = re.compile(r"""(?:\bmodule:\s*["']?|["']module["']:\s*["']|modules/)([\w-]+)""")


def shipped_files() -> list[Path]:
    """The tracked files an integrator sees, text only."""
    listed = subprocess.run(
        ["git", "ls-files", *SHIPPED, *SHIPPED_FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _ours(name: str) -> bool:
    return name.replace("-", "_").lower().startswith(("lemdcbm", "lem_dcbm"))


def test_every_config_doc_and_script_names_the_module_alike() -> None:
    found: dict[str, list[str]] = {}
    for path in shipped_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for name in _NAMED.findall(line):
                if _ours(name) and name != MODULE_NAME:
                    found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")

    assert found == {}


def test_the_install_doc_puts_the_module_in_its_own_folder() -> None:
    text = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")

    assert f"libexec/everest/modules/{MODULE_NAME}\n" in text
    assert f"module: {MODULE_NAME}\n" in text


def test_the_name_is_one_constant_and_the_example_configs_use_it() -> None:
    assert MODULE_NAMES[0] == DEFAULT_MODULE_NAME == MODULE_NAME
    for name in ("real-meter.yaml", "simulator.yaml", "tls.yaml"):
        text = (ROOT / "config" / name).read_text(encoding="utf-8")
        assert f"    module: {MODULE_NAME}\n" in text
        load_everest_config_file(ROOT / "config" / name, None)


def test_the_checker_sees_each_way_of_naming_a_module() -> None:
    lines = 'module: LemDCBM400600\n{"module": "lem-dcbm"}\nmodules/LemDCBM400600/x'
    assert _NAMED.findall(lines) == ["LemDCBM400600", "lem-dcbm", "LemDCBM400600"]
