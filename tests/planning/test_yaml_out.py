"""The fast YAML emitter used by `wideep render` reads back as exactly the data it was given."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from wideep.yaml_out import dump

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        ["true", "No", "null", "~", "1", "0x1F", "1e3", ".inf", "-", "a: b", " x", "#", "@", "y", "'"]
    ),
)
data = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(data)
def test_round_trip(value: Any) -> None:
    assert yaml.safe_load(dump({"v": value})) == {"v": value}


def test_layout_is_block_style() -> None:
    assert dump({"a": {"b": [1, {"c": "d", "e": []}]}}) == "a:\n  b:\n  - 1\n  - c: d\n    e: []\n"
