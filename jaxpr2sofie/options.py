"""The options of `convert`, which every bridge (`from_flax`, `from_nnx`, `from_keras`) takes with
the same meaning, and the one error for a keyword no entry point knows.

`convert`'s signature is the definition: a bridge forwards the options by these names
(`forwarded(locals())`), so an option added to `convert` but not to a bridge fails at once, and
tests/test_api.py compares the signatures.
"""
from __future__ import annotations

import difflib
import inspect

# convert(fn, params, example_input, <options>): the options are everything after the third
_LEADING = 3


def convert_options() -> dict:
    """{option: default} for every option of `convert`, in its order."""
    from .model import convert
    params = list(inspect.signature(convert).parameters.values())[_LEADING:]
    return {p.name: p.default for p in params}


def forwarded(local_vars: dict) -> dict:
    """The options a bridge hands to `convert`, read from the bridge's own arguments of the same
    names; `name` is left out (each bridge derives a default name from the model)."""
    return {k: local_vars[k] for k in convert_options() if k != "name"}


def reject_unknown(entry: str, unknown: dict, own=(), route: str = "call_kwargs") -> None:
    """A clear TypeError for keywords `entry` does not take, naming each, suggesting a near
    option, and saying where arguments for the model's own call go (instead of Python's TypeError
    from inside the user's module, which blames the module)."""
    if not unknown:
        return
    known = [*convert_options(), *own]
    parts = []
    for k in unknown:
        near = difflib.get_close_matches(k, known, n=1)
        parts.append(f"{k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    example = ", ".join(f"{k!r}: {v!r}" for k, v in list(unknown.items())[:2])
    raise TypeError(
        f"{entry}() got unknown keyword argument(s) {', '.join(parts)}. Its options are those of convert "
        f"({', '.join(convert_options())}){' and ' + ', '.join(own) if own else ''}. Arguments for the "
        f"model's own call go in {route}, e.g. {entry}(..., {route}={{{example}}}).")
