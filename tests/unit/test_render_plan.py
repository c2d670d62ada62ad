"""How render work is shared out: parallel workers and the DAG's mapped tasks finish together only if their
batches hold about the same work, and workspace sizes are very skewed (one can hold a quarter of all events)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from etl.render_jobs import WORKSPACE_COST, balanced_batches
from tests.conftest import examples


def work(batch: tuple[int, ...], sizes: dict[int, int]) -> int:
    return sum(sizes.get(w, 0) + WORKSPACE_COST for w in batch)


@settings(max_examples=examples(300), deadline=None)
@given(sizes=st.lists(st.integers(0, 3_000_000), max_size=60), count=st.integers(1, 12))
def test_every_workspace_once_and_no_batch_more_than_one_workspace_behind(sizes: list[int], count: int) -> None:
    ids = list(range(1, len(sizes) + 1))
    by_id = dict(zip(ids, sizes, strict=True))
    batches = balanced_batches(ids, by_id, count)

    assert sorted(w for batch in batches for w in batch) == ids
    assert len(batches) == max(1, min(count, len(ids)))
    assert all(list(batch) == sorted(batch) for batch in batches)
    loads = [work(batch, by_id) for batch in batches]
    assert loads == sorted(loads, reverse=True)  # the batch with the most work starts first
    # Greedy by size: the busiest batch is ahead of the idlest by at most one workspace's work.
    largest = max((s + WORKSPACE_COST for s in sizes), default=0)
    assert loads[0] - loads[-1] <= largest


def test_skewed_sizes_are_shared_out_evenly() -> None:
    # Zipf-like sizes as in the benchmark's data, where workspace 1 holds ~23 % of all events.
    sizes = {w: 2_400_000 // w for w in range(1, 1001)}
    batches = balanced_batches(list(sizes), sizes, 20)

    share = sum(work((w,), sizes) for w in sizes) / 20
    assert work(batches[0], sizes) <= share + work((1,), sizes) / 2
    # Batches of consecutive ids, as planned before: the first held 60 % of the events and 3x its share of work.
    consecutive = [tuple(range(a, a + 50)) for a in range(1, 1001, 50)]
    assert max(work(b, sizes) for b in consecutive) > 2.5 * work(batches[0], sizes)

    # A workspace with more than a batch's share of the work is a batch of its own.
    spread = {w: sizes[w] * 4 for w in range(1, 1001, 25)}
    assert balanced_batches(list(spread), spread, 2)[0] == (1,)


def test_without_sizes_the_workspaces_are_dealt_out_evenly() -> None:
    assert balanced_batches([5, 3, 1, 2, 4], {}, 2) == [(1, 3, 5), (2, 4)]
    assert balanced_batches([3, 1, 2], {}, 1) == [(1, 2, 3)]
    assert balanced_batches([], {}, 4) == [()]
