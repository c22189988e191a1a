"""GluonTS-format loading/grouping, the exchange_rate_nips builder, and forecasting windows."""

from __future__ import annotations

import copy
import filecmp
import gzip
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from dforce._utils import shared_data_dir
from dforce.recipes.forecast.exchange_rate import build_exchange_rate_nips, load_exchange_rate_nips, raw_exchange_rate
from dforce.recipes.forecast.features import (
    last_windows,
    lags_for_frequency,
    make_windows,
    mean_abs_scale,
    time_features,
)
from dforce.recipes.forecast.gluonts_format import (
    MultivariateSeries,
    group_test,
    group_train,
    load_gluonts_dataset,
    split_validation,
)
from dforce.errors import DataError

# three daily series, different starts, same end (01-06, as GluonTS's test grouping needs); series 1 has a
# missing value (null) and a "NaN" string
TRAIN = [
    {"start": "2021-01-01", "target": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "item_id": "a", "feat_static_cat": [0]},
    {"start": "2021-01-02", "target": [10.0, None, 30.0, "NaN", 50.0], "item_id": "b", "feat_static_cat": [1]},
    {"start": "2021-01-04", "target": [-1.0, -2.0, -3.0], "item_id": "c", "feat_static_cat": [2]},
]
H = 2  # prediction length of the fixture


def _test_entries():
    # 2 rolling dates; each date extends every train series by H steps (GluonTS layout: date-major)
    out = []
    for k in (1, 2):
        for e in TRAIN:
            t = list(e["target"]) + [100.0 * k + i for i in range(H * k)]
            out.append({"start": e["start"], "target": t, "item_id": e["item_id"]})
    return out


def _write(root, train, test, meta, gz=False):
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "metadata.json").write_text(json.dumps(meta))
    text = lambda es: "\n".join(json.dumps(e) for e in es) + "\n"  # noqa: E731
    if gz:
        with gzip.open(root / "train" / "data.json.gz", "wt") as f:
            f.write(text(train))
    else:
        (root / "train" / "data.json").write_text(text(train))
    (root / "test" / "data.json").write_text(text(test))
    return root


@pytest.fixture
def tiny(tmp_path):
    return _write(tmp_path / "tiny", TRAIN, _test_entries(), {"freq": "D", "prediction_length": H}, gz=True)


# ----------------------------------------------------------------------------- grouping


def test_train_grouping_aligns_on_calendar_and_masks(tiny):
    ds = load_gluonts_dataset(tiny)
    tr = ds.train
    # earliest start 01-01, end 01-06 -> 6 rows; later starts are left-padded
    assert tr.target.shape == (6, 3) and tr.start == pd.Timestamp("2021-01-01")
    np.testing.assert_array_equal(tr.target[:, 0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(tr.observed[:, 1], [0, 1, 0, 1, 0, 1])  # left pad, null, "NaN"
    np.testing.assert_array_equal(tr.target[[1, 3, 5], 1], [10, 30, 50])
    np.testing.assert_array_equal(tr.observed[:, 2], [0, 0, 0, 1, 1, 1])
    assert np.array_equal(np.isnan(tr.target), ~tr.observed)  # no silent imputation
    assert ds.item_ids == ["a", "b", "c"] and ds.feat_static_cat.tolist() == [[0], [1], [2]]
    assert ds.prediction_length == H and ds.freq == "D"


def test_test_grouping_one_entry_per_date(tiny):
    ds = load_gluonts_dataset(tiny)
    assert len(ds.test) == 2  # default num_test_dates = len(test) / len(train)
    assert [t.target.shape for t in ds.test] == [(6 + H, 3), (6 + 2 * H, 3)]
    last = ds.test[1]
    np.testing.assert_array_equal(last.target[-2 * H:], np.repeat(np.arange(200.0, 204.0)[:, None], 3, 1))
    np.testing.assert_array_equal(last.target[:6], ds.train.target)  # NaN where train is NaN
    assert not last.observed[0, 1] and last.observed[-1].all()


def test_train_grouping_right_pads_unequal_ends():
    s = group_train([{"start": "2021-01-01", "target": [1.0, 2.0]}, {"start": "2021-01-02", "target": [3.0, 4.0]}], "D")
    np.testing.assert_array_equal(s.observed, [[1, 0], [1, 1], [0, 1]])
    assert np.isnan(s.target[2, 0]) and np.isnan(s.target[0, 1])
    with pytest.raises(DataError, match="end at different steps"):  # GluonTS's np.vstack would fail too
        group_test([{"start": "2021-01-01", "target": [1.0, 2.0]}, {"start": "2021-01-02", "target": [3.0, 4.0]}],
                   "D", num_test_dates=1)


def test_matches_gluonts_multivariate_grouper_with_gluonts_padding(tiny):
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.multivariate_grouper import MultivariateGrouper

    ds = load_gluonts_dataset(tiny, pad="gluonts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # deep copies: ListDataset converts "start" to a Period in place
        g_train = next(iter(MultivariateGrouper()(ListDataset(copy.deepcopy(TRAIN), freq="D"))))
        g_test = list(MultivariateGrouper(num_test_dates=2)(ListDataset(_test_entries(), freq="D")))
    # GluonTS stores float32 (its ListDataset casts); its train fill np.mean(pd.Series) skips NaN
    np.testing.assert_array_equal(ds.train.target.T.astype(np.float32), g_train["target"])
    for ours, theirs in zip(ds.test, g_test):
        np.testing.assert_array_equal(ours.target.T.astype(np.float32), theirs["target"])
        assert ours.start == theirs["start"].to_timestamp()


def test_feat_dynamic_real_and_max_target_dim():
    entries = [{"start": "2021-01-01", "target": [1.0, 2.0, 3.0], "feat_dynamic_real": [[7.0, 8.0, 9.0]]},
               {"start": "2021-01-02", "target": [4.0, 5.0], "feat_dynamic_real": [[1.0, 2.0]]}]
    s = group_train(entries, "D")
    assert s.feat_dynamic_real.shape == (3, 2)
    np.testing.assert_array_equal(s.feat_dynamic_real[1:, 1], [1.0, 2.0])
    r = group_train(entries, "D", max_target_dim=1)  # GluonTS keeps the *last* series
    np.testing.assert_array_equal(r.target[1:, 0], [4.0, 5.0])
    bad = [dict(entries[0], feat_dynamic_real=[[1.0, 2.0]])]
    with pytest.raises(DataError, match="feat_dynamic_real"):
        group_train(bad, "D")


def test_split_validation_mirrors_test_layout(tiny):
    tr = load_gluonts_dataset(tiny).train
    part, val = split_validation(tr, prediction_length=1, num_windows=2)
    assert part.length == 4 and [v.length for v in val] == [5, 6]
    np.testing.assert_array_equal(val[-1].target, tr.target)
    np.testing.assert_array_equal(val[0].observed, tr.observed[:5])
    with pytest.raises(DataError, match="cannot hold out"):  # 2 rows left: not longer than the horizon
        split_validation(tr, prediction_length=2, num_windows=2)


# ----------------------------------------------------------------------------- errors


def test_loader_errors(tmp_path, tiny):
    with pytest.raises(DataError, match="does not exist"):
        load_gluonts_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metadata.json"):
        load_gluonts_dataset(tmp_path / "empty")
    bad = _write(tmp_path / "bad", TRAIN, _test_entries(), {"freq": "D"})
    with open(bad / "test" / "data.json", "a") as f:
        f.write('{"start": "2021-01-01", "target": [1, 2\n')
    with pytest.raises(DataError, match=r"data.json line 7 is not valid JSON"):
        load_gluonts_dataset(bad)
    with pytest.raises(DataError, match="not a multiple of num_test_dates=4"):
        load_gluonts_dataset(tiny, num_test_dates=4)
    uneven = _write(tmp_path / "uneven", TRAIN, _test_entries()[:2] + _test_entries()[3:5] + _test_entries()[2:3]
                    + _test_entries()[5:], {"freq": "D"})
    with pytest.raises(DataError, match="end at different steps"):
        load_gluonts_dataset(uneven)
    nofreq = _write(tmp_path / "nofreq", TRAIN, _test_entries(), {})
    with pytest.raises(DataError, match="no 'freq'"):
        load_gluonts_dataset(nofreq)
    with pytest.raises(DataError, match="list of numbers"):
        group_train([{"start": "2021-01-01", "target": [1.0, "x"]}], "D")


# ----------------------------------------------------------------------------- exchange_rate_nips


def test_exchange_rate_nips_structure(tmp_path):
    ds = load_exchange_rate_nips(tmp_path)
    assert ds.train.target.shape == (6071, 8) and ds.freq == "B" and ds.prediction_length == 30
    assert [t.length for t in ds.test] == [6071 + 30 * k for k in range(1, 6)]
    assert ds.train.start == pd.Timestamp("1990-01-01") and ds.train.observed.all()
    raw = raw_exchange_rate()
    np.testing.assert_array_equal(ds.test[-1].target, raw[:6221])


def test_exchange_rate_nips_equals_shared_gluonts_copy(tmp_path):
    shared = shared_data_dir()
    if shared is None or not (shared / "exchange_rate_nips").is_dir():
        pytest.skip("no shared/data/exchange_rate_nips beside this checkout")
    out = build_exchange_rate_nips(tmp_path / "ex")
    for name in ("metadata.json", "train/train.json", "test/test.json"):
        assert filecmp.cmp(out / name, shared / "exchange_rate_nips" / name, shallow=False), name


# ----------------------------------------------------------------------------- features and windows


def _series(T=40, D=3, seed=0, freq="B"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, D)) + 5.0
    obs = rng.random((T, D)) > 0.1
    x[~obs] = np.nan
    return MultivariateSeries(x, obs, pd.Timestamp("2020-01-06"), freq)


def test_time_features_match_gluonts_for_business_days():
    from gluonts.time_feature import time_features_from_frequency_str

    f = time_features(pd.Timestamp("2020-01-06"), "B", offset=3, length=10)  # (10, 3)
    idx = pd.bdate_range("2020-01-09", periods=10)
    expected = np.stack([fn(idx) for fn in time_features_from_frequency_str("B")], -1)
    np.testing.assert_allclose(f, expected, atol=1e-7)  # float32 storage
    assert f.shape == (10, 3)
    assert lags_for_frequency("B")[:7] == [1, 2, 3, 4, 5, 6, 7]


def test_mean_abs_scale_matches_timegrad_loop_and_torch():
    import torch

    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7, 3))
    obs = rng.random((5, 7, 3)) > 0.3
    obs[2, :, 1] = False  # no observation: falls back to the batch scale of dimension 1
    x[~obs] = np.nan
    ref = np.empty((5, 3))
    for n in range(5):  # TimeGrad MeanScaler, written as a loop
        for d in range(3):
            v = np.abs(x[n, obs[n, :, d], d])
            ref[n, d] = v.mean() if v.sum() > 0 else np.nan
    for d in range(3):
        ref[np.isnan(ref[:, d]), d] = np.nansum(np.abs(np.where(obs[:, :, d], x[:, :, d], 0))) / obs[:, :, d].sum()
    np.testing.assert_allclose(mean_abs_scale(x, obs), ref, rtol=1e-12)
    np.testing.assert_allclose(mean_abs_scale(torch.tensor(x), torch.tensor(obs)).numpy(), ref, rtol=1e-12)


def test_make_windows_matches_loop():
    s = _series(T=23, D=3)
    C, P, lags = 4, 3, [1, 2, 5]
    w = make_windows(s, C, P, stride=2, lags_seq=lags)
    L = C + P
    assert w.target.shape == (9, L, 3) and w.covariates.shape == (9, L, 3) and w.scale.shape == (9, 3)
    assert w.lags.shape == (9, L, 3, 3)
    feats = time_features(s.start, s.freq, 0, s.length)
    for n, st in enumerate(range(0, 23 - L + 1, 2)):
        np.testing.assert_array_equal(w.target[n], s.target[st:st + L])
        np.testing.assert_array_equal(w.observed[n], s.observed[st:st + L])
        np.testing.assert_array_equal(w.covariates[n], feats[st:st + L])
        ctx_scale = mean_abs_scale(s.target[None, st:st + C], s.observed[None, st:st + C])[0]
        np.testing.assert_allclose(w.scale[n], ctx_scale)
        for t in range(L):
            for j, lag in enumerate(lags):
                r = st + t - lag
                if r < 0:
                    assert not w.lags_observed[n, t, :, j].any() and np.isnan(w.lags[n, t, :, j]).all()
                else:
                    np.testing.assert_array_equal(w.lags[n, t, :, j], s.target[r])


def test_last_windows_test_and_future(tiny):
    ds = load_gluonts_dataset(tiny)
    w = last_windows(ds.test, context_length=3, prediction_length=H)
    assert w.target.shape == (2, 3 + H, 3)
    for k, t in enumerate(ds.test):
        np.testing.assert_array_equal(w.target[k, -H:], t.target[-H:])
    f = last_windows(ds.test, context_length=3, prediction_length=H, future=True)
    assert not f.observed[:, -H:].any() and np.isnan(f.target[:, -H:]).all()
    np.testing.assert_array_equal(f.target[0, :3], ds.test[0].target[-3:])
    assert np.isfinite(f.covariates).all()  # calendar features are known in the future
    with pytest.raises(DataError, match="shorter than"):
        make_windows(ds.train, 6, 2)


def test_from_array_masks_nan_and_windows():
    x = np.arange(20.0).reshape(10, 2)
    x[4, 1] = np.nan
    s = MultivariateSeries.from_array(x, "2020-01-06", "B")
    assert not s.observed[4, 1] and s.observed.sum() == 19
    w = make_windows(s, 3, 2)
    assert w.target.shape == (6, 5, 2) and not w.observed[0, 4, 1]
    with pytest.raises(DataError, match=r"must be \(T, D\)"):
        MultivariateSeries.from_array(np.zeros(5), "2020-01-06", "B")
