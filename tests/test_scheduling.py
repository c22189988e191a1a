"""Scheduling matrices: documented shapes, monotonicity, special cases and validation errors."""

import pytest
import torch

from dforce.errors import ScheduleError
from dforce.scheduling import SCHEDULES, autoregressive, full_sequence, make_schedule, pyramid, trapezoid, validate_schedule


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T,S", [(1, 1), (5, 3), (16, 10), (7, 50)])
def test_named_schedules_are_valid(name, T, S):
    m = make_schedule(name, T, S, 1.0)
    validate_schedule(m, T, S)  # start all S, end all 0, never increasing
    assert m.dtype == torch.long and m.shape[1] == T
    assert (m[1:] != m[:-1]).any(dim=1).all()  # every row transition moves some token


def test_shapes_match_the_formulas():
    T, S = 6, 4
    assert full_sequence(T, S).shape == (S + 1, T)
    assert autoregressive(T, S).shape == (T * S + 1, T)
    assert pyramid(T, S, 1.0).shape == (S + (T - 1) + 1, T)
    assert pyramid(T, S, 0.5).shape == (S + int((T - 1) * 0.5) + 1, T)
    # 𝒦[m, t] = clip(S + floor(t u) - m, 0, S)
    m = pyramid(T, S, 1.0)
    for r in range(m.shape[0]):
        for t in range(T):
            assert m[r, t] == min(max(S + t - r, 0), S)


def test_special_cases():
    T, S = 5, 3
    assert torch.equal(pyramid(T, S, 0.0), full_sequence(T, S))
    assert torch.equal(pyramid(T, S, float(S)), autoregressive(T, S))
    a = autoregressive(T, S)
    # token t only starts once t-1 is clean
    for r in range(a.shape[0]):
        for t in range(1, T):
            if a[r, t] < S:
                assert a[r, t - 1] == 0
    # pyramid: near future less noisy than far future, at every row
    p = pyramid(T, S, 1.0)
    assert (p[:, 1:] >= p[:, :-1]).all()


def test_trapezoid_middle_last():
    tz = trapezoid(7, 4, 1.0)
    last_nonzero_row = [(tz[:, t] > 0).nonzero().max().item() for t in range(7)]
    assert last_nonzero_row[3] == max(last_nonzero_row)  # the middle token finishes last
    assert last_nonzero_row[0] == last_nonzero_row[6] == min(last_nonzero_row)
    assert torch.equal(tz, tz.flip(1))  # symmetric


@pytest.mark.parametrize(
    "matrix,match",
    [
        (torch.tensor([3, 2, 1, 0]), "2-D"),
        (torch.tensor([[3, 3]]), "at least 2 rows"),
        (torch.tensor([[3, 3], [1, 0.5]]), "integer"),
        (torch.tensor([[3, 3], [0, 4]]), r"\[0, 3\]"),
        (torch.tensor([[3, 2], [0, 0]]), "row 0 must be all 3"),
        (torch.tensor([[3, 3], [0, 1]]), "last row must be all 0"),
        (torch.tensor([[3, 3], [1, 1], [2, 1], [0, 0]]), "increases token 0"),
        (torch.ones(3, 2, dtype=torch.bool), "boolean"),
    ],
)
def test_invalid_custom_matrices_raise(matrix, match):
    with pytest.raises(ScheduleError, match=match):
        validate_schedule(matrix, None, 3)


def test_custom_matrix_column_count_checked_and_bad_names():
    with pytest.raises(ScheduleError, match="3 columns but 4 tokens"):
        validate_schedule(full_sequence(3, 2), 4, 2)
    with pytest.raises(Exception, match="sampler.schedule"):
        make_schedule("spiral", 4, 2)
    with pytest.raises(ScheduleError, match="uncertainty_scale"):
        pyramid(4, 2, -1.0)
