"""Every code snippet in docs/*.md and README.md is exercised, so the docs cannot drift from the code.

- ```python blocks run in order, in one fresh interpreter and namespace per file, from the
  project root. They must not need running services (building apps and consumers is fine:
  nothing connects until a listener or worker starts).
- ```sh / ```bash / ```console blocks: every `kbridge ...` command must parse with the real
  CLI (subcommands and options exist) and `kbridge <subcommand> --help` must work; `make X`
  targets must exist in the Makefile; `celery ...` commands must parse with Celery's CLI;
  `docker compose -f F` files and `--scale S=N` services must exist.
- ```yaml, ```toml, ```ini and ```json blocks must parse. ```text is output, not code.
- A block in any other language, or in none, fails: a snippet nobody checks is the one that rots.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from celery import Celery
from celery.bin.celery import celery as celery_cli
from click.testing import CliRunner

from kbridge.cli import main as kbridge_cli

from .cli_check import parse

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [*DOCS, ROOT / "README.md"]
SHELL = {"sh", "bash", "shell", "console"}
DATA = {"yaml", "yml", "toml", "ini", "json"}
KNOWN = {"python", "text", *SHELL, *DATA}
SEPARATORS = {"&&", "||", ";", "|", "&"}
NOT_INVOCATIONS = {"cd", "mkdir", "install", "uninstall", "clone", "rm", "ls"}  # `pip install kbridge` etc.

RUNNER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
namespace = {"__name__": sys.argv[2]}
for block in json.load(sys.stdin):
    # Padding with newlines makes tracebacks point at the line in the markdown file.
    exec(compile("\n" * block["line"] + block["code"], block["path"], "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first code line, 0-based
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{rel(self.path)}:{self.line + 1} ({self.lang or 'no language'})"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def blocks(path: Path) -> list[Block]:
    """Fenced blocks, including indented ones (in lists), with their indentation removed."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.groups()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        found.append(Block(path, i - len(body), lang.lower(), "\n".join(body) + "\n"))
        i += 1
    return found


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.M) for t in line.split()}


def logical_lines(block: Block) -> list[str]:
    """Lines with `\\` continuations joined; in a console block, only `$ ` prompts (and `> ` continuations)."""
    if block.lang != "console":
        return block.code.replace("\\\n", " ").splitlines()
    found: list[str] = []
    continued = False
    for raw in block.code.splitlines():
        line = raw.strip()
        if continued:
            found[-1] = found[-1][:-1] + " " + line.removeprefix("> ")
        elif line.startswith("$ "):
            found.append(line[2:])
        else:
            continue  # output
        continued = found[-1].endswith("\\")
    return found


def commands(block: Block) -> list[list[str]]:
    """The simple commands of a shell block, without comments, separators and redirections."""
    found: list[list[str]] = []
    for line in logical_lines(block):
        current: list[str] = []
        redirect_target = False
        for token in shlex.split(line, comments=True):
            if redirect_target:
                redirect_target = False
            elif token in SEPARATORS:
                found.append(current)
                current = []
            elif token.endswith(";"):
                current.append(token[:-1])
                found.append(current)
                current = []
            elif re.fullmatch(r"\d?>>?|<", token):
                redirect_target = True
            elif not re.fullmatch(r"\d?>>?\S+|<\S+|\d>&\d", token):
                current.append(token)
        found.append(current)
    return [c for c in found if c]


def without_env(command: list[str]) -> list[str]:
    """Drop leading VAR=value assignments."""
    while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[0]):
        command = command[1:]
    return command


def kbridge_args(command: list[str]) -> list[str] | None:
    """The arguments after `kbridge` (or `python -m kbridge`, `manage.py kbridge`, `flask kbridge`), if any.

    A path such as .venv/bin/kbridge counts only in command position, so `pip install -e ../kbridge` does not.
    """
    command = without_env(command)
    if command and command[0].endswith("/kbridge"):
        return command[1:]
    for i, token in enumerate(command):
        if token == "kbridge" and (command[i - 1] if i else "") not in NOT_INVOCATIONS:
            return command[i + 1:]
    return None


def check_shell(block: Block) -> None:
    targets = makefile_targets()
    for command in map(without_env, commands(block)):
        if not command:
            continue
        where = f"{block}: {shlex.join(command)}"
        args = kbridge_args(command)
        if args is not None:
            path = parse(kbridge_cli, args)  # raises click.UsageError on an unknown command or option
            result = CliRunner().invoke(kbridge_cli, [*path, "--help"])
            assert result.exit_code == 0, f"{where}: {result.output}"
        elif command[0] == "make":
            named = [t for t in command[1:] if not t.startswith("-") and "=" not in t]
            assert set(named) <= targets, f"{where}: no Makefile target {set(named) - targets}"
        elif command[0] == "celery" or command[:3] in (["python", "-m", "celery"], ["python3", "-m", "celery"]):
            args = command[1:] if command[0] == "celery" else command[3:]
            parse(celery_cli, args, obj=SimpleNamespace(app=Celery("docs")))
        elif command[:2] == ["docker", "compose"]:
            check_compose(command, where)


def check_compose(command: list[str], where: str) -> None:
    compose = ROOT / "docker" / "compose.yaml"
    if "-f" in command:
        compose = ROOT / command[command.index("-f") + 1]
        assert compose.is_file(), f"{where}: no such compose file"
    services = yaml.safe_load(compose.read_text())["services"]
    for i, token in enumerate(command):
        if token == "--scale":
            service = command[i + 1].split("=")[0]
            assert service in services, f"{where}: no service {service!r} in {compose.name}"


def check_data(block: Block) -> None:
    if block.lang in ("yaml", "yml"):
        yaml.safe_load(block.code)
    elif block.lang == "json":
        json.loads(block.code)
    elif block.lang == "toml":
        import tomllib

        tomllib.loads(block.code)
    else:
        configparser.ConfigParser().read_string(block.code)


def run_python(path: Path, python: list[Block]) -> None:
    payload = json.dumps([{"path": str(b.path), "line": b.line, "code": b.code} for b in python])
    env = {k: v for k, v in os.environ.items() if k not in ("KBRIDGE_APP", "DJANGO_SETTINGS_MODULE")}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(ROOT), f"docs_{path.stem.replace('-', '_')}"],
        input=payload, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env,
    )
    assert done.returncode == 0, f"a python block of {rel(path)} failed:\n{done.stderr[-4000:]}"


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"getting-started.md", "deployment.md", "delivery.md"} <= names


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_every_snippet_is_exercised(path: Path) -> None:
    found = blocks(path)
    unknown = [str(b) for b in found if b.lang not in KNOWN]
    assert not unknown, f"label these blocks with one of {sorted(KNOWN)}: {unknown}"
    python = [b for b in found if b.lang == "python"]
    if python:
        run_python(path, python)
    for block in found:
        if block.lang in SHELL:
            check_shell(block)
        elif block.lang in DATA:
            check_data(block)


# -- the checker itself -------------------------------------------------------------------------------


def fake(code: str, lang: str = "sh") -> Block:
    return Block(ROOT / "docs" / "x.md", 0, lang, code)


@pytest.mark.parametrize(
    "code",
    [
        "kbridge lisen --app a:b",  # a typo in a subcommand
        "kbridge listen --consumer-group a",  # an option that does not exist
        "KBRIDGE_APP=a:b kbridge dlq replay",  # a missing argument
        "make deploy",
        "celery -A proj wrker",
        "docker compose -f docker/compose.yaml up --scale listeners=3",
    ],
)
def test_the_checker_catches_wrong_commands(code: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - click.UsageError or AssertionError, either names the problem
        check_shell(fake(code))


def test_the_checker_reads_prompts_continuations_and_wrappers() -> None:
    block = fake("$ kbridge listen \\\n>   --app a:b\nsome output\n$ cd x && make test # run\n", "console")
    assert commands(block) == [["kbridge", "listen", "--app", "a:b"], ["cd", "x"], ["make", "test"]]
    assert kbridge_args(["python", "manage.py", "kbridge", "listen"]) == ["listen"]
    assert kbridge_args(["pip", "install", "kbridge"]) is None
    assert kbridge_args(["pip", "install", "-e", "../kbridge"]) is None
    assert kbridge_args(["KBRIDGE_APP=a:b", ".venv/bin/kbridge", "info"]) == ["info"]
    check_shell(block)


def test_blocks_keep_their_line_numbers_and_language() -> None:
    readme = blocks(ROOT / "README.md")
    first_python = next(b for b in readme if b.lang == "python")
    line = (ROOT / "README.md").read_text().splitlines()[first_python.line]
    assert first_python.code.splitlines()[0] == line
