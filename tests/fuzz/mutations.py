"""Strategies shared by the fuzz modules: mutations of good input (bit flips, byte changes,
cuts, insertions, repeats and splices of two good inputs), drawn by hypothesis so that a
failure shrinks to the smallest edit that breaks; and any value a TOML file can hold."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def _edit(draw: st.DrawFn, data: bytes) -> bytes:
    """One random edit of `data`."""
    n = len(data)
    kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "repeat"]))
    at = draw(st.integers(0, n))
    if kind == "flip" and n:
        bit = draw(st.integers(0, 8 * n - 1))
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if kind == "set" and n:
        i = min(at, n - 1)
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if kind == "cut":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    end = draw(st.integers(at, min(n, at + 16)))
    if kind == "delete":
        return data[:at] + data[end:]
    return data[:end] + data[at:end] + data[end:]  # "repeat" (or an edit of empty data)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_edits: int = 4) -> bytes:
    """`data` after one to `max_edits` edits."""
    for _ in range(draw(st.integers(1, max_edits))):
        data = draw(_edit(data))
    return data


@st.composite
def spliced(draw: st.DrawFn, first: bytes, second: bytes) -> bytes:
    """The start of `first` joined to the end of `second`."""
    return (first[:draw(st.integers(0, len(first)))]
            + second[draw(st.integers(0, len(second))):])


def mutated_text(text: str, max_edits: int = 4) -> st.SearchStrategy[str]:
    """`text` mutated as UTF-8 bytes, read back with bad bytes replaced (a file reader that
    refuses bad UTF-8 is fuzzed with bytes separately)."""
    return mutated(text.encode(), max_edits).map(lambda b: b.decode("utf-8", "replace"))


# Numbers past what a float or an int64 holds; 2**20000 is too long for repr() (over 4300
# digits), and TOML reads one from a hex literal.
big_ints = st.sampled_from([10**400, -(10**400), 2**63, 2**31, -(2**31) - 1, 10**30])
huge = big_ints | st.just(20_000).map(lambda bits: 2**bits)
toml_scalar = st.one_of(st.booleans(), st.integers(), huge, st.floats(), st.text(max_size=8),
                        st.datetimes(), st.dates(), st.times())
toml_value = st.recursive(toml_scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=8)
