"""``LocalCache``: the byte-bounded LRU behind the saver's L1 and the node cache."""

from __future__ import annotations

from langgraph_resilient._local_cache import ENTRY_OVERHEAD, LocalCache


def test_least_recently_used_entries_go_first_when_the_bound_is_reached() -> None:
    cache = LocalCache(max_bytes=3 * (100 + ENTRY_OVERHEAD))
    for key in "abc":
        cache.put(key, key.upper(), 100)
    assert cache.get("a") == "A"  # "a" is now the most recent
    cache.put("d", "D", 100)
    assert cache.get("b") is None, "the least recently used went"
    assert [cache.get(k) for k in "acd"] == ["A", "C", "D"]
    assert cache.used_bytes == 3 * (100 + ENTRY_OVERHEAD) and len(cache) == 3


def test_sizes_count_and_replacing_a_key_frees_its_old_size() -> None:
    cache = LocalCache(max_bytes=10_000)
    cache.put("k", b"x", 1000)
    cache.put("k", b"y", 10)
    assert cache.get("k") == b"y"
    assert cache.used_bytes == 10 + ENTRY_OVERHEAD


def test_a_value_larger_than_the_bound_is_not_kept_and_hides_the_old_one() -> None:
    cache = LocalCache(max_bytes=500)
    cache.put("k", "small", 10)
    cache.put("k", "huge", 10_000)
    assert cache.get("k") is None, "no stale value under the key"
    assert cache.used_bytes == 0


def test_zero_bytes_disables_it_and_clear_empties_it() -> None:
    off = LocalCache(max_bytes=0)
    off.put("k", 1, 0)
    assert off.get("k") is None and len(off) == 0
    cache = LocalCache(max_bytes=10_000)
    cache.put("a", 1, 1)
    cache.clear()
    assert cache.get("a") is None and cache.used_bytes == 0 and len(cache) == 0
