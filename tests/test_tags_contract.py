"""The tag container contract (:mod:`tagger.tags.contract`): every container module, and
what it loads from a real file, satisfies the written :class:`typing.Protocol`."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from test_tags import FORMATS, Fmt, make_raw

from tagger.tags import FileTags, contract, id3, mp4, vorbis
from tagger.tags.container import _MODULES, open_tagged

MODULES = (id3, vorbis, mp4)
# The methods of Container: each one every container class must have.
METHODS = [name for name, value in vars(contract.Container).items()
           if inspect.isfunction(value) and not name.startswith("_")]


def test_contract_names_every_method() -> None:
    assert sorted(METHODS) == ["normalize", "others", "read", "save", "set_genres", "set_mood"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_satisfies_the_contract(module) -> None:
    assert isinstance(module, contract.ContainerModule)
    assert list(inspect.signature(module.load).parameters) == ["path", "kind", "options"]


def test_every_kind_dispatches_to_a_contract_module() -> None:
    assert set(_MODULES) == {kind for module in MODULES for kind in module.KINDS}
    assert all(isinstance(m, contract.ContainerModule) for m in _MODULES.values())


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_loaded_file_is_a_container(fmt: Fmt, tmp_path: Path) -> None:
    path = make_raw(tmp_path, fmt)
    tagged = open_tagged(str(path), contract.Options(id3_version=fmt.id3_version))
    assert isinstance(tagged, contract.Container)
    cls = type(tagged)
    missing = [name for name in METHODS if not callable(getattr(cls, name, None))]
    assert not missing, f"{cls.__name__} lacks {missing}"
    assert not inspect.isabstract(cls)
    assert tagged.read() == FileTags([], None)
    assert tagged.others()  # the stream at least
