"""The beets test harness both beets plugin test modules share: beets' own helpers isolate
its global configuration and plugins; this loads the genreml plugin with test settings and
runs commands as ``beet`` would."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from beets.library import Item
from beets.test.helper import ImportHelper, PluginMixin
from beets.util import cached_classproperty


class GenremlBeetsHelper(PluginMixin, ImportHelper):
    """A temporary beets library with the genreml plugin; ``import.write`` off."""

    plugin: ClassVar[str] = "genreml"
    preload_plugin: ClassVar[bool] = False

    @pytest.fixture(autouse=True)
    def _beets(self, setup: None, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
        self.capsys = capsys
        self.config["import"]["write"] = False
        beets_log = logging.getLogger("beets")
        handlers = list(beets_log.handlers)
        yield
        # `beet` adds a stderr handler bound to this test's captured stream: drop it
        for handler in set(beets_log.handlers) - set(handlers):
            beets_log.removeHandler(handler)
        cached_classproperty.cache.clear()

    def cache_path(self) -> Path:
        """The results cache the plugin is configured with."""
        return self.temp_path / "cache.db"

    def configure(self, **settings: object) -> None:
        """(Re)load the plugin with these settings over the test defaults."""
        self.unload_plugins()
        self.config["genreml"].set({"cache": str(self.cache_path()), "device": "cpu",
                                    **settings})
        self.load_plugins()
        cached_classproperty.cache.clear()  # Item._types: recomputed with this plugin

    def run_genreml(self, *args: str) -> str:
        """Run a beets command; return what it printed."""
        self.capsys.readouterr()
        self.run_command(*args)
        return self.capsys.readouterr().out

    def fresh(self, item: Item | int) -> Item:
        """The item as the library holds it now."""
        got = self.lib.get_item(item if isinstance(item, int) else item.id)
        assert got is not None
        return got
