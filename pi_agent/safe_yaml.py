"""Reading untrusted YAML: a size limit, UTF-8 checked, and a loader that cannot be bombed.

Every failure is a ConfigError naming the file (and the line where YAML knows
it), one printable line: never a traceback, a MemoryError or a RecursionError.
config.py validates what comes out.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from .errors import ConfigError


def printable(text: str) -> str:
    """One line, valid UTF-8: a hostile key cannot forge a log line or break the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else ascii(ch)[1:-1]
        for ch in text
    )


MAX_CONFIG_BYTES = 256 * 1024
MAX_YAML_NODES = 20_000  # counted with every alias expanded
MAX_YAML_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document too deep, or too big once its aliases are expanded.

    PyYAML shares an aliased node, so a "billion laughs" document loads small
    and explodes for whoever walks it; counting each alias as a copy of its
    target while composing stops it before any Python object exists. The depth
    limit keeps PyYAML's recursive composer far from RecursionError.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def _grow(self, count: int, mark: Any) -> None:
        self._nodes += count
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values once aliases are expanded", mark
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = getattr(target, "_pi_agent_size", None)
                if size is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor} refers to itself", event.start_mark
                    )
                self._grow(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark
            )
        start = self._nodes
        self._grow(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        node._pi_agent_size = self._nodes - start
        return node


def read_text(path: str | os.PathLike, where: str, noun: str, limit: int) -> str:
    """A small UTF-8 file's text; otherwise ConfigError ``"<where>: <noun> is ..."``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {noun}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL in the path
        raise ConfigError(f"{where}: cannot read {noun}: {exc}") from None
    if len(raw) > limit:
        raise ConfigError(
            f"{where}: {noun} is larger than {limit // 1024} KiB; is it the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: {noun} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None


def load_yaml(text: str, path: str | os.PathLike = "<config>") -> Any:
    """Parse YAML text with the bounded safe loader; ConfigError naming the line otherwise."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(printable(f"{path}:{where}: invalid YAML: {problem}")) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. a date like 2024-13-45, which PyYAML's constructor does not catch
        raise ConfigError(printable(f"{path}: invalid YAML: {type(exc).__name__}: {exc}")) from None


__all__ = ["MAX_CONFIG_BYTES", "load_yaml", "printable", "read_text"]
