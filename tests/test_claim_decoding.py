"""How the claim reads a row's headers: what `json.loads` makes of the text, kept when it is an
object and dropped otherwise, by the quicker parse as by `json.loads` itself (pure logic)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from outbox.claim import _headers

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_space = st.sampled_from(["", " ", "\n", "\t ", "x", "}", "{", "  ]"])


def _expected(text: str) -> object:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@given(_json, _space, _space, st.sampled_from([None, 0, 2]), st.booleans())
def test_headers_are_what_json_loads_gives(
    value: object, before: str, after: str, indent: int | None, as_bytes: bool
) -> None:
    text = before + json.dumps(value, indent=indent) + after
    expected = _expected(text)
    assert expected == _headers(text.encode() if as_bytes else text)


def test_text_that_is_not_json_gives_no_headers() -> None:
    assert {} == _headers("not json headers")
    assert {} == _headers('{"a": "b"} {"c": "d"}')  # two documents: json.loads refuses it
    assert {"a": "b"} == _headers(' {"a": "b"}\n')
    assert {} == _headers(None)
    assert {"k": "v"} == _headers({"k": "v"})  # a driver that decoded it already
    deep = '{"a":' * 3000 + "1" + "}" * 3000  # JSON, but deeper than Python's parser goes
    assert {} == _headers(deep)
    assert {} == _headers(" " + deep)
    assert {} == _headers(deep.encode())
