from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbridge import KBridge
from kbridge.errors import KBridgeError
from kbridge.loader import load_app

APP_SOURCE = """
from kbridge import KBridge
app = KBridge(client_id="loaded", kafka={"bootstrap_servers": "x:1"})
not_an_app = 42
"""


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Write a uniquely named module importable for this test; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str, name: str | None = None) -> str:
        name = name or f"kbl_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spec", [None, ""])
def test_missing_spec_says_how_to_name_the_app(spec: str | None) -> None:
    with pytest.raises(KBridgeError, match="no app given") as info:
        load_app(spec)
    assert "--app module:attribute" in str(info.value) and "KBRIDGE_APP" in str(info.value)


def test_loads_the_named_attribute(make_module) -> None:
    name = make_module(APP_SOURCE)
    app = load_app(f"{name}:app")
    assert isinstance(app, KBridge) and app.client_id == "loaded"
    assert load_app(name) is app  # the only KBridge in the module


def test_unimportable_module(make_module) -> None:
    with pytest.raises(KBridgeError, match="cannot import module 'kbl_does_not_exist'") as info:
        load_app("kbl_does_not_exist:app")
    assert "--app" in str(info.value)


def test_missing_attribute(make_module) -> None:
    name = make_module(APP_SOURCE)
    with pytest.raises(KBridgeError, match=f"module '{name}' has no attribute 'ap'"):
        load_app(f"{name}:ap")


def test_attribute_that_is_not_a_kbridge_app(make_module) -> None:
    name = make_module(APP_SOURCE)
    with pytest.raises(KBridgeError, match=f"'{name}:not_an_app' is a int, not a KBridge app"):
        load_app(f"{name}:not_an_app")


def test_module_without_exactly_one_app_needs_an_attribute(make_module) -> None:
    name = make_module("x = 1\n")
    with pytest.raises(KBridgeError, match="defines 0 KBridge apps"):
        load_app(name)


def test_broken_import_inside_the_app_module_is_not_disguised(make_module) -> None:
    name = make_module("import kbl_missing_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="kbl_missing_dependency_xyz"):
        load_app(f"{name}:app")


def test_missing_dependency_with_a_prefix_name_is_not_disguised(make_module) -> None:
    name = make_module("import kblpfx\n", name="kblpfx_app")
    with pytest.raises(ModuleNotFoundError, match="kblpfx"):
        load_app(f"{name}:app")
