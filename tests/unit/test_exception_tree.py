"""Every exception class the package defines sits under ``LemDcbmError``.

A caller (the CLI, the service, a test, an integrator) can then catch everything the
package raises on purpose with one class, and tell it apart from a bug.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lem_dcbm
from lem_dcbm.errors import LemDcbmError


def _package_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(lem_dcbm.__path__, "lem_dcbm."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_the_walk_finds_the_tree_and_the_modules_below_it() -> None:
    classes = _package_exception_classes()
    assert "lem_dcbm.errors.MeterError" in classes
    assert "lem_dcbm.simulator.refusals.Refusal" in classes
    assert len(classes) > 20


def test_every_exception_class_of_the_package_is_a_lem_dcbm_error() -> None:
    outside = sorted(
        f"{name}({', '.join(base.__name__ for base in cls.__bases__)})"
        for name, cls in _package_exception_classes().items()
        if issubclass(cls, Exception) and not issubclass(cls, LemDcbmError)
    )
    assert outside == [], f"exception classes outside LemDcbmError: {outside}"


def test_the_only_non_error_is_the_demo_s_sigterm_unwinding_like_ctrl_c() -> None:
    # Not an error but a signal: it must pass every ``except Exception`` on its way out,
    # as Ctrl-C's KeyboardInterrupt does, so it cannot sit under LemDcbmError.
    signals = sorted(
        name for name, cls in _package_exception_classes().items() if not issubclass(cls, Exception)
    )
    assert signals == ["lem_dcbm.demo.Terminated"]
