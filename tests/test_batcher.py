"""Token-budget batching: every item once, within the limits, results back by index."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.serve.batcher import BackendLimits, Timings, padded_shape, plan_batches, predict_window


class RecordingBackend:
    """A Backend whose output row identifies its input, and which records batch shapes."""

    name = "recording"
    dimensions = 2

    def __init__(self, limits: BackendLimits):
        self.limits = limits
        self.shapes: list[tuple[int, int]] = []

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        self.shapes.append((len(sequences), max(len(s) for s in sequences)))
        return np.array([[s[0], len(s)] for s in sequences], dtype=np.float32)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), max_size=120),
    budget=st.integers(1, 4000),
    max_batch=st.integers(1, 50),
)
def test_plan_covers_every_item_once_within_limits(lengths, budget, max_batch):
    limits = BackendLimits(max_tokens=300, max_batch=max_batch, token_budget=budget)
    batches = plan_batches(lengths, limits)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= max_batch
        padded = len(batch) * max(lengths[i] for i in batch)
        # A single article longer than the budget still goes, alone.
        assert padded <= budget or len(batch) == 1
        assert lengths[batch[0]] == max(lengths[i] for i in batch)  # longest first


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 256), max_size=300),
    budget=st.integers(256, 4096),
    max_batch=st.integers(1, 64),
)
def test_padded_shapes_stay_within_the_budget_and_few(lengths, budget, max_batch):
    """A backend that pads to bounded shapes (width_step 32, as OpenVINO) gets batches planned
    in those shapes: what runs fits the budget, and each width sees a handful of row counts."""
    limits = BackendLimits(max_tokens=256, max_batch=max_batch, token_budget=budget, width_step=32)
    shapes = set()
    for batch in plan_batches(lengths, limits):
        rows, width = padded_shape(len(batch), lengths[batch[0]], limits)
        assert rows >= len(batch) and width >= lengths[batch[0]] and width % 32 == 0 and width <= 256
        assert rows * width <= budget and rows <= max_batch
        shapes.add((rows, width))
    for width in {w for _, w in shapes}:
        assert len({r for r, w in shapes if w == width}) <= (min(max_batch, budget // width)).bit_length() + 1


def test_a_budget_full_batch_runs_unpadded():
    """Nine rows of 200 tokens fit a 2,048 budget at width 224: they run as 9 x 224, not as
    the next power of two (16 x 224, 44% of it padding); a partial batch still rounds up."""
    limits = BackendLimits(max_tokens=256, max_batch=64, token_budget=2048, width_step=32)
    assert [len(b) for b in plan_batches([200] * 12, limits)] == [9, 3]
    assert padded_shape(9, 200, limits) == (9, 224)
    assert padded_shape(3, 200, limits) == (4, 224)
    assert padded_shape(5, 20, limits) == (8, 32)
    assert padded_shape(3, 200, BackendLimits(256, 64, 2048)) == (3, 200)  # width_step 1: as it is
    timings = Timings()
    predict_window(RecordingBackend(limits), [[1] * 200] * 12, timings)
    assert timings.padded_tokens == 9 * 224 + 4 * 224  # the shapes that run, not rows x longest


def test_sorting_removes_most_padding():
    lengths = [10, 200, 12, 190, 11, 205, 9, 199] * 8
    limits = BackendLimits(max_tokens=256, max_batch=8, token_budget=10_000)
    batches = plan_batches(lengths, limits)
    padded = sum(len(b) * lengths[b[0]] for b in batches)
    in_order = sum(8 * max(lengths[i:i + 8]) for i in range(0, len(lengths), 8))
    assert padded < 0.6 * in_order


def test_predict_window_maps_results_back_in_input_order():
    rng = np.random.default_rng(0)
    sequences = [[i] + [7] * int(rng.integers(0, 60)) for i in range(100)]
    backend = RecordingBackend(BackendLimits(max_tokens=64, max_batch=16, token_budget=256))
    timings = Timings()
    out = predict_window(backend, sequences, timings)
    assert out[:, 0].tolist() == list(range(100))
    assert out[:, 1].tolist() == [len(s) for s in sequences]
    assert all(rows <= 16 and (rows * width <= 256 or rows == 1) for rows, width in backend.shapes)
    assert timings.batches == len(backend.shapes)
    assert timings.real_tokens == sum(len(s) for s in sequences)
    assert 0 <= timings.padding_share < 0.2


def test_empty_window_predicts_nothing():
    backend = RecordingBackend(BackendLimits(max_tokens=8, max_batch=4, token_budget=32))
    assert predict_window(backend, [], Timings()).shape == (0, 2)
    assert backend.shapes == []
