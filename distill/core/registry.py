"""Name → builder registries, so a YAML ``name:`` picks a component.

A new dataset or model plugs in with one module and one decorator::

    @register_dataset("my_corpus", MyCorpusOptions)   # distill.data.base
    def build_my_corpus(options: MyCorpusOptions) -> SourceIndex: ...

    @MODELS.register("my_net")                          # distill.core.models
    def build_my_net(n_classes, **options) -> nn.Module: ...

An installed package registers its own with an entry point, and nothing here changes:
``[project.entry-points."pld.models"] my_net = "my_pkg.my_net"`` (``pld.datasets`` for datasets).
Builders are plain callables; the registry only maps names and gives clear errors.
"""

from __future__ import annotations

import logging
from typing import Callable, Generic, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, kind: str, plugins: str | None = None):
        """``plugins``: an entry-point group whose modules register more builders when imported,
        loaded the first time a name is looked up."""
        self.kind = kind
        self._builders: dict[str, F] = {}
        self._plugins = plugins

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(builder: F) -> F:
            if name in self._builders and self._builders[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._builders[name]!r}")
            self._builders[name] = builder
            return builder

        return decorator

    def _load_plugins(self) -> None:
        group, self._plugins = self._plugins, None  # once, and not again from inside a plug-in
        if group is None:
            return
        from importlib.metadata import entry_points

        for entry in entry_points(group=group):
            try:
                entry.load()
            except Exception as exc:  # a broken plug-in must not take the built-in ones down
                log.warning("%s plug-in %r (%s) failed to import: %s", self.kind, entry.name, entry.value, exc)

    def get(self, name: str) -> F:
        self._load_plugins()
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}") from None

    def names(self, ordered: bool = False) -> list[str]:
        """Registered names, sorted (``ordered``: in registration order)."""
        self._load_plugins()
        return list(self._builders) if ordered else sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._builders
