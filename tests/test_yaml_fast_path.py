"""The libyaml fast path reads a document exactly as the round-trip loader does, or leaves it.

``load_yaml`` reads an ordinary document with libyaml's C parser and everything else (errors,
anchors, tags, limits) with ruamel's guarded round-trip loader, which says where the problem
is. The two must never disagree on a document the fast path accepts: same values, same types,
same positions for every key, value and item.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.language import yaml_source
from kairos.language.yaml_source import _fast_load, load_yaml, round_trip_load

REPO = Path(__file__).resolve().parent.parent

SNIPPETS = [
    "a: 1\nb: on\nc: 09:00\nd: 2030-01-31\ne: 2030-01-31T10:00:00Z\nf: 1_000\ng: 0o17\n"
    "h: 0x1F\ni: 1.50\nj: .inf\nk: ~\nl:\nm: null\nn: True\no: 'yes'\np: \"x\\ty\"\n",
    "- a\n-\n- ~\n- [1, 2, {x: y}]\n- - nested\n  - more\n- k: v\n  k2:\n    - 1\n",
    "key:\n- indentless\n- seq\nother: |\n  block\n  text\nthird: >-\n  folded\n  text\n",
    "1: one\nfalse: t\nnull: n\n3.5: f\n",
    "1: one\n'1': two\n",
    "{a: 1, b: [x, y], c: {d: e}}",
    "[1, 2, 3]",
    "just a scalar",
    "---\na: 1\n...\n",
    "a: émoji 🎉 text\nb: 'x: 🎉'\n",
    "name: 🎉\nsteps:\n  - send: x  # comment 🎉\n    to: y\n",
    "\ufeffa: 1\n",
    "a: 'multi\n  line'\nb: plain\n  continued\n",
    "a: 1\r\nb: 2\r\n",
    "a: -1\nb: +1\nc: 1e3\nd: 1.0e+3\ne: .NaN\nf: 0b101\ng: 012\nh: 1:20\n",
    "a: 2030-1-3\nb: 2001-12-14 21:59:43.10 -5\nc: 2001-12-14t21:59:43.10-05:00\n",
    "a: 'it''s'\nb: \"\\u00e9\\x41\"\n",
    "a: |+\n  keep\n\nb: 1\n",
    "a: 0.1\nb: 1.\nc: -.5\n",
    "a: yes\nb: Off\nc: y\nd: n\n",
    "a:\n  - b:\n    - c\n",
    "a: [1,\n  2,\n  3]\n",
    "a:\n\n\n  b: 1\n",
    "- - - deep\n",
    # Aliases of mappings and lists: copies, with the original's positions.
    "a: &x {b: 1, c: [1, 2]}\nd: *x\ne:\n  - *x\n  - f\n",
    "base: &b\n  k: v\n  n:\n    - 1\nlist:\n- *b\n- *b\nm:\n  inner: *b\n",
    "a: &x\n  b: &y [1]\n  c: *y\nd: *x\n",
    "a: &x {k: ~}\nb: *x\n",
    "&x [1]\n",
]

# What the fast path must leave to the round-trip loader, so that its errors (and its
# reading of YAML 1.2 where libyaml reads 1.1) stay exactly as they were.
LEFT = [
    "",  # an empty file
    "a: 1\na: 2\n",  # a duplicate key
    "true: a\n1: b\n",  # the same key to Python
    "a: &x 1\nb: *x\n",  # an anchored scalar (ruamel keeps `&x true` as 1)
    "a: &x\n  b: *x\n",  # an alias inside what it names
    "a: *x\n",  # an undefined alias
    "a: &x [1]\n*x : 2\n",  # an alias as a key
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcd", "bcde", strict=True)
    )
    + "f: [*e, *e]\n",  # a billion laughs, small: 200,000 values once expanded
    "a: !!str 1\n",  # tags
    "<<: {a: 1}\n",  # a merge key
    "? [a]\n: value\n",  # a list as a key
    "a: 1\n---\nb: 2\n",  # two documents
    "%YAML 1.1\n---\na: yes\n",  # libyaml would read `yes` as true
    "a: 1\nb:\t2\n",  # a tab between tokens: ruamel refuses it
    "a: x\u2028y\n",  # a line break to YAML 1.1, text to 1.2
    "a: b: c\n",  # a syntax error
    "a: [1, 2\n",
    "a: \x07\n",  # a control character
    "x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)),  # too deep
]


def _same(text: str) -> None:
    fast = _fast_load(text, "f.yaml")
    slow, problems = round_trip_load(text, "f.yaml")
    assert fast is not None, f"the fast path left {text!r}"
    assert problems == [] and slow is not None
    assert fast.data == slow.data
    assert repr(fast.data) == repr(slow.data)  # the same types too (True is not 1)
    assert fast.positions == slow.positions


@pytest.mark.parametrize("text", SNIPPETS)
def test_the_fast_path_reads_a_snippet_as_the_round_trip_loader_does(text: str) -> None:
    _same(text)


@pytest.mark.parametrize("text", LEFT)
def test_the_fast_path_leaves_the_unusual_to_the_round_trip_loader(text: str) -> None:
    assert _fast_load(text, "f.yaml") is None
    assert load_yaml(text, "f.yaml") == round_trip_load(text, "f.yaml")


def test_every_shipped_ordinary_yaml_file_reads_the_same_both_ways() -> None:
    files = [
        path
        for top in ("journeys", "segments", "templates", "benchmarks", "tests/fixtures")
        for path in sorted((REPO / top).glob("**/*.yaml"))
        if "invalid" not in path.parts
    ]
    fast = 0
    for path in files:
        _same(path.read_text(encoding="utf-8"))
        fast += 1
    assert fast >= 25


def test_without_libyaml_the_round_trip_loader_reads_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = SNIPPETS[0]
    expected = round_trip_load(text, "f.yaml")
    monkeypatch.setattr(yaml_source, "_CParser", None)
    assert _fast_load(text, "f.yaml") is None
    assert load_yaml(text, "f.yaml") == expected
