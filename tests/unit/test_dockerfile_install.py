"""The Dockerfile's promises that a build on one base cannot show, and the constraints file.

``scripts/container-test`` (run by CI after the tests) builds the image for real and runs
it: install, entry point, health check, journal in the volume. What stays here is what
that build does not check, and what is worth knowing without a container engine: the
public default base, the settings a reader relies on, the health check's timing, the
build context and the pinned dependency versions.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from lem_dcbm.health import health_file_path, health_main
from tests.support.constraints import pins as pinned_versions
from tests.support.constraints import runtime_closure

ROOT = Path(__file__).resolve().parents[2]
VOLUME = "/var/lib/lem-dcbm"
#: The issue's promise: unhealthy within this many seconds of the meter going away.
UNHEALTHY_WITHIN_S = 30


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of the arguments."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(item) for item in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def expand(value: str, env: dict[str, str]) -> str:
    """Docker's ``$VAR`` / ``${VAR}`` substitution (unset variables become empty)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def env_pairs(instruction: Instruction, env: dict[str, str]) -> dict[str, str]:
    """The KEY=VALUE pairs of an ENV line, expanded against ``env``."""
    pairs = {}
    for token in shlex.split(instruction.args):
        key, sep, value = token.partition("=")
        assert sep, f"ENV uses the KEY=VALUE form: {instruction.args}"
        pairs[key] = expand(value, env)
    return pairs


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the context."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def runtime(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage: what the image is made of."""
    last_from = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    return instructions[last_from:]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def runtime_env(runtime: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for instruction in runtime:
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction, env))
    return env


def healthcheck(runtime: list[Instruction]) -> tuple[dict[str, float], list[str]]:
    """The HEALTHCHECK's options (in seconds or counts) and its command."""
    options_text, _, command = only(runtime, "HEALTHCHECK").args.partition(" CMD ")
    options = {}
    for option in options_text.split():
        name, _, value = option.removeprefix("--").partition("=")
        options[name] = float(value.removesuffix("s"))
    return options, json.loads(command)


def test_base_is_a_build_argument_defaulting_to_a_public_python(
    instructions: list[Instruction],
) -> None:
    # CI builds on a local base; the default must stay what anyone can pull.
    assert instructions[0].keyword == "ARG"
    name, _, default = instructions[0].args.partition("=")
    assert name == "BASE"
    assert re.fullmatch(r"python:3\.\d+-slim", default), default
    stages = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert stages
    assert all(stage in ("${BASE}", "$BASE") for stage in stages)


def test_image_runs_as_unprivileged_user(runtime: list[Instruction]) -> None:
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    uid = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit()
    assert int(uid) != 0
    last_user = max(n for n, i in enumerate(runtime) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in runtime[last_user:])


def test_defaults_need_no_config_for_broker_journal_and_heartbeat(
    runtime: list[Instruction],
) -> None:
    assert only(runtime, "ENTRYPOINT").exec_form() == ["lem-dcbm", "run"]
    assert only(runtime, "CMD").exec_form() == ["--config", "/config/config.yaml"]
    env = runtime_env(runtime)
    assert env["EV_MQTT_BROKER_HOST"] == "mosquitto"
    assert env["EV_MQTT_BROKER_PORT"] == "1883"
    assert env["EV_MQTT_EVEREST_PREFIX"] == "everest/"
    assert env["PATH"].split(":")[0] == "/opt/lem-dcbm/.venv/bin"
    assert only(runtime, "VOLUME").exec_form() == [VOLUME]
    assert env["LEM_DCBM_STATE_DIR"].startswith(f"{VOLUME}/")
    assert env["LEM_DCBM_HEALTH_DIR"].startswith(f"{VOLUME}/")


def test_healthcheck_turns_unhealthy_within_30_s(runtime: list[Instruction]) -> None:
    options, command = healthcheck(runtime)
    assert command[:3] == ["python", "-m", "lem_dcbm.health"]
    max_age = float(command[command.index("--max-age") + 1])
    # Stale after max_age, then `retries` failed checks `interval` apart.
    assert max_age + options["interval"] * options["retries"] <= UNHEALTHY_WITHIN_S
    assert options["timeout"] <= options["interval"]


def test_healthcheck_arguments_follow_the_heartbeat(
    runtime: list[Instruction], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process: the command itself runs in the image, in scripts/container-test.
    _, command = healthcheck(runtime)
    monkeypatch.setenv("LEM_DCBM_HEALTH_DIR", str(tmp_path))
    assert health_main(command[3:]) == 1
    beat = health_file_path("powermeter_1")
    beat.touch()
    assert health_main(command[3:]) == 0


def test_build_context_keeps_local_state_out_and_sources_in(
    instructions: list[Instruction],
) -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "lem_dcbm/__pycache__/x.pyc"):
        assert dockerignored(path, patterns), path
    copies = [i for i in instructions if i.keyword == "COPY" and "--from=" not in i.args]
    assert copies
    for copy in copies:
        for source in shlex.split(copy.args)[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} missing"
            assert not dockerignored(source, patterns), f"COPY source {source} is ignored"
    assert not dockerignored("lem_dcbm/health.py", patterns)


#: The Pythons an image may have (BASE): a dependency some of them need is pinned too.
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")


@pytest.mark.parametrize("python", PYTHONS)
def test_constraints_pin_every_runtime_dependency_exactly(python: str) -> None:
    pins = pinned_versions(python)
    for requirement in pins.values():
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{requirement}: one == pin expected"
        assert specifiers[0].operator == "==", f"{requirement}: one == pin expected"
    needed = runtime_closure("lem-dcbm", python)
    assert set(needed) <= set(pins), "constraints.txt must pin every runtime dependency"
    # A pin only some Pythons need (typing-extensions before 3.13) applies to all: harmless.
    anywhere = set().union(*(runtime_closure("lem-dcbm", other) for other in PYTHONS))
    assert set(pins) <= anywhere, "constraints.txt must pin the runtime dependencies, only"
    # Every pin satisfies what the project and the other dependencies ask of it.
    for name, requirements in needed.items():
        version = next(iter(pins[name].specifier)).version
        for requirement in requirements:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{name}=={version} does not satisfy {requirement}"
            )


def test_compose_file_wires_the_module_to_its_broker_and_volume() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    module = compose["services"]["lem-dcbm"]
    assert module["build"] == "."
    assert module["environment"]["EV_MQTT_BROKER_HOST"] in compose["services"]
    mounts = {}
    for volume in module["volumes"]:
        match = re.fullmatch(r"(.+?):(/[^:]*)(?::ro|:rw)?", volume)
        assert match, volume
        mounts[match.group(2)] = match.group(1)
    assert "/config/config.yaml" in mounts
    assert mounts[VOLUME] in compose["volumes"]
