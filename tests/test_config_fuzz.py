"""Fuzz: the config loader answers every input with a Config or a ConfigError, nothing else.

Seeds are the shipped files (config/pi-agent.yaml, config/examples/*.yaml). Two
surfaces: the loaded document mutated structurally (values replaced by hostile
ones, keys dropped, added or renamed) through ``parse_config``, and the YAML text
mutated (characters, hostile snippets, bytes that are not UTF-8) through
``load_config``. A document that parses must also build on mock pins, so what
``pi-agent check`` passes ``run`` accepts. PI_AGENT_HYPOTHESIS=long runs many more.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_agent.config import Config, load_config, parse_config
from pi_agent.devices import Devices
from pi_agent.errors import ConfigError
from pi_agent.tools import ToolBox

ROOT = Path(__file__).resolve().parent.parent
SEED_FILES = [
    ROOT / "config" / "pi-agent.yaml",
    *sorted((ROOT / "config" / "examples").glob("*.yaml")),
]
SEED_TEXTS = [p.read_text(encoding="utf-8") for p in SEED_FILES]
SEED_DOCS = [yaml.safe_load(text) for text in SEED_TEXTS]
LONG = os.environ.get("PI_AGENT_HYPOTHESIS") == "long"


def budget(n: int) -> int:
    """``n`` examples in CI; the long profile's own count otherwise."""
    return settings.default.max_examples if LONG else n


# --------------------------------------------------------------------------- hostile values

NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2,
        27,
        10**20,
        -(10**400),
        10**400,
        0.5,
        -0.0,
        1e308,
        -1e308,
        1e-320,
        float("inf"),
        float("-inf"),
        float("nan"),
    ]
)
TEXTS = st.one_of(
    st.sampled_from(
        ["", "0666", "0777", "ws://example.com", "ws://127.0.0.1:1", "wss://", "mock", "on",
         "\x00", "\ud800", "line\nbreak", "\x1b[31m", "x" * 5000, "v1beta", "led", "servo",
         "rgb_led", "pwm_led", "blink", "pulse", "mix", "/dev/null", "é"]
    ),
    st.text(max_size=20),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.integers(),
    st.floats(),
    TEXTS,
    st.just(b"\xff\xfe"),
    st.just(datetime.date(2024, 1, 1)),
    st.just(frozenset({1, 2})),
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _laughs(levels: int) -> list:
    """A billion laughs as Python objects: nine references to the level below, ``levels`` times."""
    value: list = [1] * 9
    for _ in range(levels):
        value = [value] * 9
    return value


VALUES = (
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(TEXTS, st.integers(), st.none()), inner, max_size=4),
        ),
        max_leaves=8,
    )
    | st.builds(_deep, st.sampled_from([50, 400]))
    | st.builds(_laughs, st.just(8))
)


def _paths(doc: Any, prefix: tuple = (), out: list | None = None) -> list[tuple]:
    """Paths to the nodes of ``doc`` (keys and list indexes): 6 levels deep, 500 at most."""
    out = [] if out is None else out
    out.append(prefix)
    if len(prefix) >= 6 or len(out) >= 500:
        return out
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        if len(out) >= 500:
            break
        _paths(value, (*prefix, key), out)
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A seed document with 1-4 structural mutations."""
    doc = copy.deepcopy(draw(st.sampled_from(SEED_DOCS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "rename"]))
        if not path:
            if op == "replace":
                doc = draw(VALUES)
            continue
        parent, key = _parent(doc, path), path[-1]
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(TEXTS, st.integers(), st.none()))] = draw(VALUES)
        elif op == "add" and isinstance(parent, list):
            parent.insert(key, draw(VALUES))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(TEXTS)] = parent.pop(key)
    return doc


# --------------------------------------------------------------------------- hostile text

SNIPPETS = [
    "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
    "[" * 5000 + "]" * 5000,
    "{a: " * 3000 + "1" + "}" * 3000,
    "- " * 2000 + "x\n",
    "auto_off_s: .inf\n",
    "max_duration_s: .nan\n",
    "x: &r [*r]\n",
    "!!python/object/apply:os.system ['true']\n",
    "x: !!binary aGVsbG8=\n",
    "x: !!set {a, b}\n",
    "x: 2024-13-45\n",
    "x: 1e999\n",
    "x: 0x_\n",
    "? [a, b]\n: c\n",
    "x: 12345678901234567890123456789012345678901234567890\n",
    "%YAML 1.1\n---\n",
    "--- a\n--- b\n",
    "\t\tx: 1\n",
    'x: "\\ud800"\n',
    'x: "\\0"\n',
    "<<: *undefined\n",
    "mode: 0666\n",
    "endpoint: ws://192.0.2.1\n",
]
LAUGHS_FLOW = (
    "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1], "
    + ", ".join(
        f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]"
)
DEEP_FLOW = "[" * 5000 + "]" * 5000
ALPHABET = ":[]{}&*!|>-#'\"%@`,?\n\t .0123456789eE+aZ_\\~"


@st.composite
def mutated_texts(draw: st.DrawFn) -> bytes:
    """A seed file with 1-6 text mutations (characters, snippets, raw bytes)."""
    text = draw(st.sampled_from(SEED_TEXTS))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "snippet", "value"]))
        if op == "insert":
            text = text[:at] + draw(st.text(ALPHABET, min_size=1, max_size=8)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif op == "replace":
            text = text[:at] + draw(st.text(ALPHABET, min_size=1, max_size=8)) + text[at + 1 :]
        elif op == "snippet":
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[at:]
        else:  # a hostile scalar after the next "key: "
            colon = text.find(": ", at)
            if colon >= 0:
                end = text.find("\n", colon)
                end = len(text) if end < 0 else end
                hostile = draw(
                    st.sampled_from([".inf", "-.inf", ".nan", "1e999", "-1e999", "9" * 400,
                                     "null", "[]", "{}", "'\\x00'", '"\\ud800"', "~", "yes",
                                     "0666", "ws://203.0.113.9", "*nope", "&a", "!!binary AA==",
                                     LAUGHS_FLOW, DEEP_FLOW, "{a: " * 2000 + "1" + "}" * 2000])
                )  # fmt: skip
                text = text[: colon + 2] + hostile + text[end:]
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter: bytes that are not UTF-8
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
        raw = raw[:at] + bad + raw[at:]
    return raw


# --------------------------------------------------------------------------- properties


def _builds_on_mock_pins(config: Config) -> None:
    """What parses must also build: devices on mock pins and every tool's declaration."""
    factory = MockFactory(pin_class=MockPWMPin)
    try:
        with Devices(config, pin_factory=factory) as devices:
            ToolBox(config.tools, devices)
    finally:
        factory.reset()


def _only_config_errors(call) -> Config | None:
    try:
        config = call()
    except ConfigError as exc:
        text = str(exc)
        assert text and exc.problems, "a ConfigError must say what is wrong"
        text.encode("utf-8")  # printable on any terminal: no lone surrogates
        assert all("\n" not in line and "\x1b" not in line for line in exc.problems)
        return None
    assert isinstance(config, Config)
    _assert_finite(config)
    return config


def _assert_finite(value: Any, path: str = "") -> None:
    """Every number in a parsed Config is finite (an .inf timer or a .nan level crashes later)."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _assert_finite(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _assert_finite(item, f"{path}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{path} = {value} passed the loader"


@settings(max_examples=budget(300))
@given(doc=mutated_documents())
def test_config_fuzz_structural_mutations_raise_only_config_error(doc):
    config = _only_config_errors(lambda: parse_config(doc))
    if config is not None:
        _builds_on_mock_pins(config)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("config-fuzz")


@settings(max_examples=budget(300))
@given(raw=mutated_texts())
def test_config_fuzz_text_mutations_raise_only_config_error(fuzz_dir, raw):
    path = fuzz_dir / "config.yaml"
    path.write_bytes(raw)
    config = _only_config_errors(lambda: load_config(path))
    if config is not None:
        _builds_on_mock_pins(config)


def test_config_fuzz_seeds_load():
    for path in SEED_FILES:
        assert isinstance(load_config(path), Config), path
