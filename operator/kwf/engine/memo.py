"""Caches keyed by object identity, for values pydantic cannot hash.

Specs are frozen models holding lists, so they have no hash; the operator
keeps the parsed spec of a run between events, so the same objects come back
and the checks on them need to run once.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def by_identity(maxsize: int) -> Callable[[Callable[[K], V]], Callable[[K], V]]:
    """Memoize a one-argument function on the identity of its argument.

    A tuple argument is keyed by the identities of its items. The cache holds
    the argument itself, so an id is never reused while its entry lives.
    """

    def decorate(function: Callable[[K], V]) -> Callable[[K], V]:
        cache: OrderedDict[Any, tuple[K, V]] = OrderedDict()

        @functools.wraps(function)
        def cached(arg: K) -> V:
            key = tuple(map(id, arg)) if isinstance(arg, tuple) else id(arg)
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit[1]
            value = function(arg)
            cache[key] = (arg, value)
            if len(cache) > maxsize:
                cache.popitem(last=False)
            return value

        return cached

    return decorate
