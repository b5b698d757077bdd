"""One way to report bad input: collect every problem, then refuse the whole input.

Loaders (cell profiles, configuration, CSV files) call `Problems.add` for each bad
field and `Problems.raise_if_any` at the end, so the user sees every mistake at
once and nothing is half-applied. An error about an unknown name says which names were
meant with `close_names`, one rule for the CLI and MQTT.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """Bad user input; the message names each bad field, its value and what is allowed."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


@dataclass
class Problems:
    """Accumulates problems found in one input (a file, a command-line value)."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, where: str, value: object, allowed: str) -> None:
        """`where = value: allowed`; a value of None is one not given (TOML has no null, an
        option left out is None): `where: allowed`."""
        shown = "" if value is None else f" = {_shown(value)}"
        self.items.append(f"{where}{shown}: {allowed}")

    def check_range(
        self, where: str, value: float, low: float | None = None, high: float | None = None
    ) -> None:
        """Adds a problem when `value` is outside [low, high] (either bound optional) or NaN."""
        if (
            value != value
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            lo = "-inf" if low is None else _bound(low)
            hi = "inf" if high is None else _bound(high)
            self.add(where, value, f"must be within [{lo}, {hi}]")

    def take(self, load: Callable[..., T], *args: object) -> T | None:
        """What `load(*args)` returns; or None, its InputError's problems added (under the
        error's source), so that the next input is still checked and all are told at once."""
        try:
            return load(*args)
        except InputError as exc:
            self.items.extend(p if exc.source == self.source else f"{exc.source}: {p}"
                              for p in exc.problems)
            return None

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(self.source, self.items)


def _bound(limit: float) -> str:
    """A range's end as written: an int in full (a seed's 4294967295, not 4.29497e+09)."""
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


def _shown(value: object) -> str:
    """repr(value), or what it is when Python refuses to write an int of over 4300 digits
    (TOML reads one from a long enough hex literal)."""
    try:
        return repr(value)
    except ValueError:
        return f"<a {type(value).__name__} too large to show>"


def close_names(text: str, names: Sequence[str], *, similar: int = 5, contains: bool = True,
                last_part: bool = True, limit: int = 6) -> list[str]:
    """The names a mistyped `text` may have meant, best first, each once, at most `limit`:
    those ending in `.text` (the section left out) or, with `contains`, holding a `text` of
    3 characters or more; then the `similar` closest spellings; then, with `last_part`,
    those whose last dotted part is spelled like `text`. The CLI takes the defaults; an
    MQTT reason, which may name several unknown parameters, asks for fewer."""
    near = [n for n in names
            if n.endswith("." + text) or (contains and len(text) >= 3 and text in n)]
    near += difflib.get_close_matches(text, names, n=similar, cutoff=0.6)
    if last_part:
        near += [n for n in names
                 if difflib.get_close_matches(text, [n.rsplit(".", 1)[-1]], cutoff=0.75)]
    return list(dict.fromkeys(near))[:limit]


MAX_TOML_CHARS = 16 * 2**20  # far beyond any configuration, scenario or cell profile
TEXT_CHUNK_CHARS = 2**20


class NotText(ValueError):
    """A file read as text that holds a NUL or goes on past its bound."""


def read_text_bounded(path: Path, max_chars: int, encoding: str = "utf-8",
                      newline: str | None = None) -> str:
    """A text file's contents, read a chunk at a time so that what is no text (a NUL:
    /dev/zero) or does not end (a pipe) is refused early with NotText, not read into memory
    whole. OSError and UnicodeDecodeError as open() and read() raise them."""
    chunks, size = [], 0
    with path.open(encoding=encoding, newline=newline) as f:
        while chunk := f.read(TEXT_CHUNK_CHARS):
            if "\x00" in chunk:
                raise NotText("it holds a NUL character")
            size += len(chunk)
            if size > max_chars:
                raise NotText(f"it is longer than {max_chars:,} characters")
            chunks.append(chunk)
    return "".join(chunks)


def read_toml(path: str | Path) -> dict:
    """A TOML file's contents; InputError naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = read_text_bounded(path, MAX_TOML_CHARS)
    except OSError as exc:
        raise InputError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except (NotText, UnicodeDecodeError) as exc:
        raise InputError(str(path), [f"not valid TOML: {exc}"]) from exc
    except ValueError as exc:  # a NUL in the name
        raise InputError(str(path), [f"cannot read the file: {exc}"]) from exc
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict:
    """TOML text's contents; InputError naming `source` when it is not TOML or holds what
    cannot be read."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(source, [f"not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # tomllib reads each [ or { of a value one call deeper
        raise InputError(source, ["arrays or inline tables nested too deep to read (a few "
                                  "hundred levels)"]) from exc
    except ValueError as exc:  # an integer of over 4300 digits
        raise InputError(source, [f"cannot read a value: {str(exc).split(';')[0]}"]) from exc
