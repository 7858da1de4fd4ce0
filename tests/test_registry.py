"""Registries: near-miss suggestions, duplicate names, entry-point plugins."""
from __future__ import annotations

import logging

import pytest

import suite.core.registry
from defenses import DEFENSES, Defense
from suite.data import DATASETS
from suite.core.errors import SuiteError, UnknownNameError
from suite.models import BACKBONES
from suite.core.registry import Registry


def test_unknown_defense_suggests_near_miss() -> None:
    with pytest.raises(UnknownNameError) as info:
        DEFENSES.get("finetun")
    message = str(info.value)
    assert "unknown defense 'finetun'" in message
    assert "did you mean 'finetune'" in message
    assert "\n" not in message


def test_unknown_dataset_suggests_near_miss() -> None:
    with pytest.raises(UnknownNameError) as info:
        DATASETS.get("sst-2")
    assert "did you mean 'sst2'" in str(info.value)


def test_unknown_name_is_a_suite_error_and_a_key_error() -> None:
    with pytest.raises(SuiteError):
        BACKBONES.get("cnnn")
    with pytest.raises(KeyError):
        BACKBONES.get("cnnn")


def test_far_name_gets_no_suggestion_but_the_full_list() -> None:
    with pytest.raises(UnknownNameError) as info:
        DATASETS.get("zzzzzzzz")
    message = str(info.value)
    assert "did you mean" not in message
    assert "sst2_sentence" in message and "trec" in message
    assert f"all {len(DATASETS.names())}" in message


def test_known_names_resolve() -> None:
    assert DEFENSES.get("finetune").name == "finetune"
    assert DATASETS.get("trec").name == "trec"
    assert "cnn" in BACKBONES
    assert "nope" not in BACKBONES


def test_registering_same_name_twice_for_different_objects_raises() -> None:
    reg: Registry[object] = Registry("widget")

    class A: ...

    class B: ...

    reg.register("a")(A)
    with pytest.raises(SuiteError, match="widget 'a' is registered twice"):
        reg.register("a")(B)
    assert reg.get("a") is A  # the first registration stands


def test_alias_clash_raises() -> None:
    reg: Registry[object] = Registry("widget")

    class A: ...

    class B: ...

    reg.register("a", "alpha")(A)
    assert reg.get("alpha") is A
    with pytest.raises(SuiteError, match="'alpha' is registered twice"):
        reg.register("b", "alpha")(B)


def test_registering_same_object_twice_is_allowed() -> None:
    reg: Registry[object] = Registry("widget")

    class A: ...

    reg.register("a")(A)
    reg.register("a")(A)  # e.g. a module imported twice
    assert reg.names() == ["a"]


def test_registering_existing_defense_name_raises() -> None:
    class Other(Defense):
        pass

    with pytest.raises(SuiteError, match="finetune"):
        DEFENSES.register("finetune")(Other)
    assert DEFENSES.get("finetune") is not Other


class _FakeEntryPoint:
    def __init__(self, name: str, loader) -> None:
        self.name, self.value, self._loader = name, f"fake_plugin:{name}", loader

    def load(self):
        return self._loader()


def test_entry_point_plugin_registers_a_defense(monkeypatch: pytest.MonkeyPatch) -> None:
    class PluginDefense(Defense):
        """A third-party defense."""

    def register_plugin(registry: Registry) -> None:
        registry.register("plugin_defense")(PluginDefense)

    groups: list[str | None] = []

    def fake_entry_points(*, group: str | None = None):
        groups.append(group)
        return [_FakeEntryPoint("plugin_defense", lambda: register_plugin)] if group == "suite.defenses" else []

    monkeypatch.setattr(suite.core.registry, "entry_points", fake_entry_points)
    reg: Registry[type[Defense]] = Registry("defense", entry_point_group="suite.defenses")
    assert groups == []  # plugins load lazily
    assert reg.get("plugin_defense") is PluginDefense
    assert "plugin_defense" in reg.names()
    reg.names()
    assert groups == ["suite.defenses"]  # loaded once


def test_broken_plugin_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    class Good(Defense):
        pass

    def broken():
        raise ImportError("no module named fake_plugin")

    def fake_entry_points(*, group: str | None = None):
        return [_FakeEntryPoint("broken", broken),
                _FakeEntryPoint("good", lambda: (lambda reg: reg.register("good")(Good)))]

    monkeypatch.setattr(suite.core.registry, "entry_points", fake_entry_points)
    reg: Registry[type[Defense]] = Registry("defense", entry_point_group="suite.defenses")
    with caplog.at_level(logging.WARNING, logger="suite.core.registry"):
        assert reg.names() == ["good"]
    assert "could not load defense plugin 'broken'" in caplog.text


def test_registry_without_group_never_reads_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**kwargs):
        raise AssertionError("entry_points must not be read")

    monkeypatch.setattr(suite.core.registry, "entry_points", fail)
    reg: Registry[int] = Registry("number")
    reg.register("one")(1)
    assert reg.get("one") == 1
