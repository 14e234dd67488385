"""The Dockerfile's promises, and its install steps replayed in a fresh venv.

No Docker engine runs here, so the install part of the Dockerfile (its ENV, WORKDIR, COPY
and the RUN that calls pip) is executed as written under a temporary directory standing
in for the image's ``$LEM_DCBM_HOME``. What it produces must give a working ``lem-dcbm``:
the ENTRYPOINT and the HEALTHCHECK are run against it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE_HOME = "/opt/lem-dcbm"


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


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def test_base_image_is_a_build_argument(instructions: list[Instruction]) -> None:
    assert instructions[0].keyword == "ARG"
    name, _, default = instructions[0].args.partition("=")
    assert name == "BASE"
    assert "python" in default
    assert "slim" in default
    assert only(instructions, "FROM").args in ("${BASE}", "$BASE")


def test_runs_as_unprivileged_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Nothing after the switch may need root again.
    last_user = max(n for n, i in enumerate(instructions) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in instructions[last_user:])


def test_entrypoint_config_broker_and_health(instructions: list[Instruction]) -> None:
    assert only(instructions, "ENTRYPOINT").exec_form() == ["lem-dcbm", "run"]
    assert only(instructions, "CMD").exec_form() == ["--config", "/config/config.yaml"]
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction, env))
    assert env["EV_MQTT_BROKER_HOST"] == "mosquitto"
    assert env["EV_MQTT_BROKER_PORT"] == "1883"
    assert env["EV_MQTT_EVEREST_PREFIX"] == "everest/"
    assert env["LEM_DCBM_HOME"] == IMAGE_HOME
    # ENTRYPOINT's lem-dcbm is the one the install step puts into the venv.
    assert env["PATH"].split(":")[0] == f"{IMAGE_HOME}/.venv/bin"
    health = only(instructions, "HEALTHCHECK").args
    assert "--interval=" in health
    assert health.split(" CMD ", 1)[1].startswith('["lem-dcbm", "health"')


def test_dockerignore_keeps_local_state_out_and_sources_in(
    instructions: list[Instruction],
) -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "lem_dcbm/__pycache__/x.pyc"):
        assert dockerignored(path, patterns), path
    for copy in (i for i in instructions if i.keyword == "COPY"):
        for source in shlex.split(copy.args)[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} missing"
            assert not dockerignored(source, patterns), f"COPY source {source} is ignored"
    assert not dockerignored("lem_dcbm/health.py", patterns)


@dataclass(frozen=True)
class Replayed:
    """The result of replaying the install steps: where the image's home ended up."""

    home: Path
    env: dict[str, str]
    instructions: list[Instruction]
    #: Files of the package as the install step saw them (relative to lem_dcbm/).
    package_files: frozenset[Path]

    @property
    def bin(self) -> Path:
        return self.home / ".venv" / "bin"

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            env={**self.env, **env},
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )


def replay_install(instructions: list[Instruction], scratch: Path) -> Replayed:
    """Execute ENV, WORKDIR, COPY and the pip RUN of the build stage under ``scratch``."""
    home = scratch / "opt" / "lem-dcbm"
    tools = scratch / "tools"
    tools.mkdir(parents=True)
    # The base image's python3, played by the interpreter running the tests.
    (tools / "python3").symlink_to(sys.executable)
    env = {
        "PATH": f"{tools}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(scratch)),
    }
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"):
        if name in os.environ:
            env[name] = os.environ[name]
    workdir = Path("/")
    package_files: frozenset[Path] = frozenset()
    installs = [i for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1, "expected exactly one RUN with pip install"
    for instruction in instructions[: instructions.index(installs[0]) + 1]:
        if instruction.keyword == "ENV":
            pairs = env_pairs(instruction, env)
            if "LEM_DCBM_HOME" in pairs:
                assert pairs["LEM_DCBM_HOME"] == IMAGE_HOME
                pairs["LEM_DCBM_HOME"] = str(home)
            env.update(pairs)
        elif instruction.keyword == "WORKDIR":
            workdir = Path(expand(instruction.args, env))
            assert workdir.is_relative_to(scratch), f"WORKDIR {workdir} outside the replay"
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, dest = shlex.split(instruction.args)
            for source in sources:
                origin = ROOT / source
                into = workdir / dest / origin.name if dest.endswith("/") else workdir / dest
                into.parent.mkdir(parents=True, exist_ok=True)
                # Docker copies symbolic links as links: a link to a file left out of
                # the COPY would dangle in the image, and so it does here.
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, into, symlinks=True, ignore=ignore)
                else:
                    shutil.copy2(origin, into, follow_symlinks=False)
        elif instruction.keyword == "RUN":
            package = workdir / "src" / "lem_dcbm"
            package_files = frozenset(
                path.relative_to(package) for path in package.rglob("*") if path.is_file()
            )
            assert IMAGE_HOME not in instruction.args, "install step must use $LEM_DCBM_HOME"
            done = subprocess.run(
                ["/bin/sh", "-c", instruction.args],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{instruction.args}\n{done.stdout}\n{done.stderr}"
    runtime = {**env, "PATH": f"{home}/.venv/bin:{env['PATH']}"}
    return Replayed(home, runtime, instructions, package_files)


@pytest.fixture(scope="module")
def replayed(instructions: list[Instruction], tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    return replay_install(instructions, tmp_path_factory.mktemp("image"))


def test_install_leaves_no_sources_behind(replayed: Replayed) -> None:
    assert (replayed.bin / "lem-dcbm").exists()
    assert not (replayed.home / "src").exists()


def test_installed_package_is_a_full_copy(replayed: Replayed) -> None:
    """Not editable, and every file of lem_dcbm (code, schemas, manifest) is in it."""
    done = replayed.run("python", "-c", "import lem_dcbm, sys; print(lem_dcbm.__file__)")
    assert done.returncode == 0, done.stderr
    installed = Path(done.stdout.strip()).parent
    assert installed.is_relative_to(replayed.home / ".venv")
    # The module validates its config against the manifest: it must be in the image.
    assert Path("manifest.yaml") in replayed.package_files
    missing = {path for path in replayed.package_files if not (installed / path).is_file()}
    assert not missing, f"not installed: {sorted(map(str, missing))}"


def test_dependencies_are_consistent(replayed: Replayed) -> None:
    done = replayed.run("python", "-m", "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_entrypoint_runs(replayed: Replayed) -> None:
    entrypoint = only(replayed.instructions, "ENTRYPOINT").exec_form()
    done = replayed.run(*entrypoint, "--help")
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout


def test_healthcheck_follows_the_heartbeat(replayed: Replayed, tmp_path: Path) -> None:
    health = only(replayed.instructions, "HEALTHCHECK").args
    command = json.loads(health.split(" CMD ", 1)[1])
    beat = tmp_path / "beat"
    missing = replayed.run(*command, LEM_DCBM_HEALTH_FILE=str(beat))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    beat.touch()
    fresh = replayed.run(*command, LEM_DCBM_HEALTH_FILE=str(beat))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
