"""LRU eviction's bookkeeping shortcuts against a plain reference: the order after any sequence of uses is the one
that moving every used adapter to the end, one by one, gives (vLLM's ``LRUCache.touch``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lorasim.policies.eviction.lru import LruEviction

NAMES = [f"a{i}" for i in range(6)]
uses = st.lists(st.sampled_from(NAMES), unique=True, max_size=6)
op = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(NAMES)),
    st.tuples(st.just("use"), st.sampled_from(NAMES)),
    st.tuples(st.just("many"), uses),
    st.tuples(st.just("steps"), uses),
    st.tuples(st.just("again"), uses),  # the previous batch of uses, then these others (a step that admitted more)
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
)


@settings(max_examples=500, deadline=None)
@given(ops=st.lists(op, max_size=40))
def test_lru_order_matches_moving_each_use_to_the_end(ops):
    lru = LruEviction()
    ref: list[str] = []  # least recent first
    for a in NAMES:
        lru.on_insert(a, 0.0)
        ref.append(a)
    last: list[str] = []
    for kind, arg in ops:
        if kind == "again":
            kind, arg = "many", last + [a for a in arg if a not in last]
        if kind == "insert":
            if arg in ref:
                continue  # the store inserts an adapter only when it is not resident
            lru.on_insert(arg, 0.0)
            ref.append(arg)
        elif kind == "remove":
            lru.on_remove(arg)
            if arg in ref:
                ref.remove(arg)
        else:
            used = arg if isinstance(arg, list) else [arg]
            if any(a not in ref for a in used):
                continue  # the store uses resident adapters only
            if kind == "use":
                lru.on_use(arg, 0.0)
            elif kind == "many":
                lru.on_use_many(list(arg), 0.0)
            else:
                lru.on_use_steps(list(arg), [0.0, 1.0])
            last = list(used)
            for a in used:
                ref.remove(a)
                ref.append(a)
        assert list(lru._order) == ref
        if ref:
            assert lru.victim(set(ref)) == ref[0]
            assert lru.victim(set(ref[1:]) or {ref[0]}) == (ref[1] if len(ref) > 1 else ref[0])
