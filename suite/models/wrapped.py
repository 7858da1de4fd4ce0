"""Wrapped classifiers: a backbone inside a defense's model (e.g. FLAT's masked classifier).

A defense whose trained model is more than the backbone (FLAT: backbone + word-mask network)
wraps the backbone in a :class:`WrappedClassifier` subclass in ``Defense.prepare_model``. The
wrapper is a ``TextClassifier`` (evaluation and attacks use it as is), saves like any classifier
(one ``model.safetensors`` holding the wrapper's own weights and the inner model's under
``inner.``) and describes itself in ``model.json``::

    {"wrapper": <kind>, "settings": {<its constructor settings>}, "inner": <the inner description>,
     "backbone": <the inner backbone's name>, "num_labels": ...}

``suite.models.loading.load_classifier`` rebuilds it through :data:`WRAPPERS`: the inner model
from ``"inner"`` (recursively, so wrappers may nest), then ``cls.from_description(settings,
inner)``, then loads the weights. A defense module registers its wrapper class at import with
``@register_wrapper("kind")`` (defenses may import ``suite.models``; the reverse never happens),
so a checkpoint loads in any process that imported ``defenses``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch

from suite.core.registry import Registry
from suite.models.base import Batch, ModelOutput, TextClassifier


class WrappedClassifier(TextClassifier):
    """A classifier around ``inner``; by default every call is passed through.

    Subclasses override ``forward_embeddings`` (and whatever else they change), keep their own
    JSON-serialisable constructor settings in :meth:`settings` and take them back as keyword
    arguments of ``__init__(inner, **settings)`` (or override :meth:`from_description`).
    """

    wrapper_kind: ClassVar[str] = ""

    def __init__(self, inner: TextClassifier) -> None:
        super().__init__()
        self.inner = inner
        self.backbone_name = inner.backbone_name
        self.num_labels = inner.num_labels

    def encode(self, texts: Sequence[tuple[str, ...]]) -> Batch:
        return self.inner.encode(texts)

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.inner.embed(batch)

    def forward_embeddings(self, embeds: torch.Tensor, batch: Batch, return_features: bool = False) -> ModelOutput:
        return self.inner.forward_embeddings(embeds, batch, return_features=return_features)

    def settings(self) -> dict[str, Any]:
        """This wrapper's own constructor settings (JSON values), passed back to ``from_description``."""
        return {}

    def description(self) -> dict[str, Any]:
        if not self.wrapper_kind:
            raise TypeError(f"{type(self).__name__} is not registered: decorate it with @register_wrapper")
        return {"wrapper": self.wrapper_kind, "settings": self.settings(), "inner": self.inner.description(),
                "backbone": self.inner.backbone_name, "num_labels": self.num_labels}

    @classmethod
    def from_description(cls, settings: dict[str, Any], inner: TextClassifier) -> "WrappedClassifier":
        """Rebuild (without weights) from ``model.json``'s ``settings`` and the rebuilt inner model."""
        return cls(inner, **settings)


def innermost(model: TextClassifier) -> TextClassifier:
    """The backbone inside any number of :class:`WrappedClassifier` layers (its tokenizer or
    vocabulary names a text's tokens)."""
    while isinstance(model, WrappedClassifier):
        model = model.inner
    return model


WRAPPERS: Registry[type[WrappedClassifier]] = Registry("model wrapper")


def register_wrapper(kind: str) -> Callable[[type[WrappedClassifier]], type[WrappedClassifier]]:
    """Class decorator: ``@register_wrapper("flat-mask")``; sets ``cls.wrapper_kind``."""

    def decorator(cls: type[WrappedClassifier]) -> type[WrappedClassifier]:
        if not (isinstance(cls, type) and issubclass(cls, WrappedClassifier)):
            raise TypeError(f"@register_wrapper({kind!r}) needs a WrappedClassifier subclass, got {cls!r}")
        cls.wrapper_kind = kind
        return WRAPPERS.register(kind)(cls)

    return decorator
