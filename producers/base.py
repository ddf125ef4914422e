"""The contract every article source follows. Sources never touch Kafka: they yield
raw articles, and one publisher (``newsflow.kafka.Publisher``) writes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from newsflow.schemas import RawArticle


class Retry(Exception):  # noqa: N818 - it is an instruction, not an error
    """Raised by a source that cannot be read now and should be asked again later."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(f"retry in {delay_s:.0f}s: {reason}")
        self.delay_s = delay_s
        self.reason = reason


class Source(Protocol):
    """Something that yields raw articles. ``name`` is used in logs."""

    name: str

    def articles(self) -> Iterator[RawArticle]: ...
