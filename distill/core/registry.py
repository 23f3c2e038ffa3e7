"""Name → builder registries, so a YAML ``name:`` picks a component.

A new dataset or model plugs in with one module and one decorator::

    @register_dataset("my_corpus", MyCorpusOptions)   # distill.data.base
    def build_my_corpus(options: MyCorpusOptions) -> SourceIndex: ...

    @MODELS.register("my_net")                          # distill.core.models
    def build_my_net(n_classes, **options) -> nn.Module: ...

Builders are plain callables; the registry only maps names and gives clear errors.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(builder: F) -> F:
            if name in self._builders and self._builders[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._builders[name]!r}")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
