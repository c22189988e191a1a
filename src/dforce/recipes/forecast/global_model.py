"""The global Diffusion Forcing forecaster: one model for every series of a panel (``dforce forecast``).

A token is one series' value at one step (DeepAR's global layout, with Diffusion Forcing's per-token noise
levels instead of a likelihood head), so hundreds of series of different lengths train one model and
each window is scaled on its own (:mod:`dforce.recipes.forecast.tokens`). Training (Algorithm 1) runs on
the windows of the training rows, early-stopping on the mean weighted quantile loss (≈ CRPS) of forecasts
for the last rows held out; the sample spread is then calibrated on those windows and the forecast pools the samples of the
``early_stop.ensemble`` best epochs (checkpoint ensembling, for run-to-run stability).
Forecasting (Algorithm 2) absorbs the context (a missing value as pure noise, as in training) and samples
the horizon with the causal pyramid schedule.

Defaults from the frequency (printed by the CLI; override with ``data.context_length`` / ``data.lags``):
context = max(1 season, H); lags = the first 3 multiples of the season that are >= H (plus one week for
hourly / sub-hourly data).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dforce._utils import check_choice
from dforce.diffusion import NoiseSchedule, NoiseScheduleConfig
from dforce.engine import checkpoint as ckpt
from dforce.engine.config import config_to_dict, from_dict
from dforce.engine.trainer import TrainConfig, train
from dforce.errors import CheckpointError, ConfigError, DataError
from dforce.models import ModelConfig, build_model
from dforce.objective import ObjectiveConfig
from dforce.recipes.forecast.frequency import default_context, seasonal_lags, secondary_season
from dforce.recipes.forecast.metrics import INTERVALS, forecast_metrics
from dforce.recipes.forecast.panel import Panel
from dforce.recipes.forecast.tokens import (REPRESENTATIONS, Layout, Tokens, WindowDataset, WindowEncoder, typical_step,
                                            window_origins)
from dforce.sampler import SamplerConfig, sample

BEST_FILE = "best_{}.safetensors"  # the ensemble's weights, best validation epoch first
CALIBRATIONS = ("wql", "coverage")  # early_stop.calibrate
COVERAGE_STEP = 0.05  # resolution of the coverage rule's spread search
META_FILE = "forecast_meta.json"  # layout, per-series steps, spread, ... (what forecasting needs besides config.yaml)


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PanelDataConfig:
    prediction_length: int = 24  # horizon H (the CLI's --horizon)
    context_length: int = 0  # 0: from the frequency, max(context_seasons x season, H)
    context_seasons: int = 1  # seasons of context when context_length = 0 (3 before 2026-12-08; docs/forecast.md)
    lags: tuple[int, ...] = ()  # lag rows (each >= H); empty: the first lag_seasons multiples of the season >= H
    lag_seasons: int = 3
    # revin: (y - mean_ctx) / spread_ctx | diff: changes / mean |change| (#4) | pool: one model each, their samples
    # pooled | auto: of revin, diff and pool the lowest validation wQL (pool and auto: 2x the training time)
    representation: str = "revin"
    scale_floor: float = 0.1  # a window's scale >= this x the series' mean |step| (flat contexts, pegged series)
    min_context_observed: int = 2  # a training window needs this many observed context values
    val_windows: int = 3  # horizons held out at the end of the training rows for early stopping ...
    val_fraction: float = 0.25  # ... but at most this fraction of the rows (short data keep most for training)
    val_origins: int = 10  # forecast origins spread over the held-out rows (less luck than one window)
    val_max_windows: int = 256  # at most this many (series, origin) validation windows (a fixed random subset: cost)
    nonnegative: str | bool = "auto"  # auto: clip at 0 when every training value is >= 0 | on | off

    def __post_init__(self):
        if isinstance(self.nonnegative, bool):  # YAML reads a bare on / off as true / false
            object.__setattr__(self, "nonnegative", "on" if self.nonnegative else "off")
        check_choice("data.nonnegative", self.nonnegative, ("auto", "on", "off"))
        check_choice("data.representation", self.representation, (*REPRESENTATIONS, "auto", "pool"))
        for k in ("prediction_length", "context_seasons", "val_windows", "val_origins", "val_max_windows"):
            if getattr(self, k) < 1:
                raise ConfigError(f"data.{k} must be >= 1, got {getattr(self, k)}")
        if self.context_length < 0:
            raise ConfigError(f"data.context_length must be >= 0 (0 = from the frequency), got {self.context_length}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class PanelEarlyStopConfig:
    epoch_steps: int = 100  # batches per epoch (reference: 100)
    max_epochs: int = 20  # hard cap
    patience: int = 4  # epochs without validation improvement (reference: 6)
    val_samples: int = 32  # samples per validation window
    ensemble: int = 1  # pool the samples of this many best checkpoints (run-to-run stability)
    spread_grid: tuple[float, ...] = (1.0,)  # sample-spread factors tried on validation (1.0 only: off)
    # how the spread is chosen on validation: wql (the lowest wQL of spread_grid) | coverage (in the grid's range, the
    # factor whose 50/80/90 % intervals cover the validation values closest to nominal; docs/forecast.md)
    calibrate: str = "wql"
    # removed keys (lost their experiment, docs/forecast.md "What we learned"): old runs' configs still load
    RENAMED_KEYS: ClassVar[dict[str, tuple[str | None, object]]] = {"refit": (None, False)}

    def __post_init__(self):
        for k in ("epoch_steps", "max_epochs", "patience", "val_samples", "ensemble"):
            if getattr(self, k) < 1:
                raise ConfigError(f"early_stop.{k} must be >= 1, got {getattr(self, k)}")
        check_choice("early_stop.calibrate", self.calibrate, CALIBRATIONS)
        if not self.spread_grid or min(self.spread_grid) <= 0:
            raise ConfigError(f"early_stop.spread_grid must be non-empty positive factors, got {self.spread_grid}")


@dataclass(frozen=True)
class PanelForecastConfig:
    data: PanelDataConfig = field(default_factory=PanelDataConfig)
    diffusion: NoiseScheduleConfig = field(default_factory=lambda: NoiseScheduleConfig(
        num_levels=1000, beta_schedule="cosine", objective="v"))  # reference time series: cosine, v-pred
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="rnn", width=64, depth=1))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=64, lr=1e-3, weight_decay=1e-3, warmup_steps=100, grad_clip=10.0,
        ema_decay=0.99, checkpoint_every=1000, log_every=100))
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(  # eta 1: stochastic steps (docs/forecast.md)
        steps=10, schedule="pyramid", eta=1.0, uncertainty_scale=1.0, window=64, stabilization_level=10))
    early_stop: PanelEarlyStopConfig = field(default_factory=PanelEarlyStopConfig)
    num_samples: int = 100  # forecast paths per window
    seed: int = 0


def resolve_layout(cfg: PanelDataConfig, season: int, freq: str, history: int) -> Layout:
    """The window layout for data of ``season`` / ``freq`` with ``history`` rows: the frequency's defaults,
    the context shortened where the data are too short for it (at least two steps)."""
    H = cfg.prediction_length
    C = cfg.context_length or default_context(season, H, cfg.context_seasons, minimum=0)
    C = max(2, min(C, history - H - 1)) if not cfg.context_length else C
    lags = tuple(cfg.lags) or tuple(seasonal_lags(season, H, cfg.lag_seasons, secondary_season(freq)))
    representation = cfg.representation if cfg.representation in REPRESENTATIONS else REPRESENTATIONS[0]  # checked as revin
    return Layout(C, H, lags, representation, cfg.scale_floor, cfg.min_context_observed)


def describe(layout: Layout, season: int, nonnegative: bool) -> str:
    """One line for the output: what the defaults chose."""
    return (f"context {layout.context} steps, horizon {layout.horizon}, season {season}, "
            f"lags {list(layout.lags) or 'none'}, {'non-negative' if nonnegative else 'real-valued'} forecasts")


def chosen(fc: "GlobalForecaster") -> str:
    """What ``representation: auto | pool`` made and why (empty for a fixed representation)."""
    if not fc.candidates:
        return ""
    made = " + ".join(m.layout.representation for m in fc.members) + " pooled" if fc.members else fc.layout.representation
    scores = ", ".join(f"{r} {v:.4g}" for r, v in fc.candidates.items())
    return f"; {fc.cfg.data.representation} representation -> {made} (validation wQL {scores})"


# ----------------------------------------------------------------------------- fitted forecaster


@dataclass
class GlobalForecaster:
    """A trained forecaster: models (best checkpoint first), schedule, layout and per-series units."""

    models: list[torch.nn.Module]
    schedule: NoiseSchedule
    cfg: PanelForecastConfig
    layout: Layout
    step: dict[str, float]  # series id -> typical step (scale floor unit) on the training rows
    spread: float = 1.0
    nonnegative: bool = False
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0
    best_val_wql: float = float("nan")
    cond_dim: int = 0
    val_wql: float = float("nan")  # validation wQL of the forecast as made (ensemble, calibrated spread)
    candidates: dict[str, float] = field(default_factory=dict)  # representation auto | pool: each option's val_wql
    members: list["GlobalForecaster"] = field(default_factory=list)  # representation: pool -> the pooled forecasters
    val_samples: np.ndarray | None = field(default=None, repr=False)  # (B, S, H) validation samples (not saved)
    val_target: np.ndarray | None = field(default=None, repr=False)  # (B, H) their true values (not saved)

    def steps_for(self, panel: Panel) -> np.ndarray:
        """``(N,)`` typical steps of the panel's series (new series: from their own values)."""
        own = typical_step(panel.values)
        return np.asarray([self.step.get(i, own[k]) for k, i in enumerate(panel.ids)])


def _held_out(cfg: PanelDataConfig, panel: Panel) -> tuple[int, np.ndarray]:
    """``(fit_end, val_origins)``: training rows ``< fit_end``; validation origins in ``[fit_end, T - H]``."""
    H, T = cfg.prediction_length, panel.length
    span = min(cfg.val_windows * H, max(H, int(cfg.val_fraction * T)))
    fit_end = T - span
    origins = np.unique(np.linspace(fit_end, T - H, cfg.val_origins).round().astype(np.int64))
    return fit_end, origins


def fit(cfg: PanelForecastConfig, panel: Panel, run_dir: str | Path | None = None, device: str = "cpu",
        progress: bool = True) -> GlobalForecaster:
    """Train on every row of ``panel`` (the caller cuts it at the first forecast origin).

    ``data.representation: pool`` trains one forecaster per representation (each in ``run_dir/candidates/<name>``)
    and pools their samples (half the paths each, one spread calibrated on the pool); ``auto`` keeps whichever of
    revin, diff and their pool forecasts the validation windows with the lowest wQL (as statsforecast's Auto*
    models choose by an information criterion); ``candidates`` records the three scores."""
    if cfg.data.representation in REPRESENTATIONS:
        fc = _fit_one(cfg, panel, run_dir, device, progress)
    else:
        fits = {}
        for rep in REPRESENTATIONS:
            one = replace(cfg, data=replace(cfg.data, representation=rep))
            sub = None if run_dir is None else Path(run_dir) / "candidates" / rep
            fits[rep] = _fit_one(one, panel, sub, device, progress)
        pool = _pool(cfg, list(fits.values()))
        options = {**fits, "pool": pool} if cfg.data.representation == "auto" else {"pool": pool}
        fc = min(options.values(), key=lambda f: f.val_wql)
        fc.cfg = replace(fc.cfg, data=replace(fc.cfg.data, representation=cfg.data.representation))  # as asked
        fc.candidates = {r: round(f.val_wql, 6) for r, f in {**fits, "pool": pool}.items()}
        fc.seconds = sum(f.seconds for f in fits.values())
    if run_dir is not None:
        save(fc, run_dir)
    return fc


def _fit_one(cfg: PanelForecastConfig, panel: Panel, run_dir, device: str, progress: bool) -> GlobalForecaster:
    """One forecaster of a concrete representation (:func:`fit`); the engine's checkpoints go to ``run_dir``."""
    dc, es = cfg.data, cfg.early_stop
    H = dc.prediction_length
    fit_end, val_o = _held_out(dc, panel)
    layout = resolve_layout(dc, panel.calendar.season, panel.freq, fit_end)
    if fit_end - H < 1:
        raise DataError(f"the data have {panel.length} rows: too few to train for a horizon of {H} and hold out "
                        f"{panel.length - fit_end} for early stopping (lower --horizon)")
    step = typical_step(panel.values[:, :fit_end])
    enc = WindowEncoder(panel, layout, step)
    train_pairs = window_origins(panel.observed[:, :fit_end], layout, 1, fit_end - H)
    val_pairs = np.concatenate([window_origins(panel.observed, layout, o, o) for o in val_o])
    if len(val_pairs) > dc.val_max_windows:
        keep = np.random.default_rng(cfg.seed).choice(len(val_pairs), dc.val_max_windows, replace=False)
        val_pairs = val_pairs[np.sort(keep)]
    if len(val_pairs) == 0:
        raise DataError("no validation window: the held-out rows hold no value with enough context before them")
    y_val = enc.encode(val_pairs[:, 0], val_pairs[:, 1])  # targets only (val_pairs' rows < T)
    target = _targets(panel, val_pairs, H)
    nonneg = {"on": True, "off": False}.get(dc.nonnegative, panel.head(fit_end).nonnegative())
    torch.manual_seed(cfg.seed)
    schedule = NoiseSchedule(cfg.diffusion)
    model = build_model(cfg.model, (1,), cfg.diffusion.num_levels, enc.cond_dim)
    best: list[tuple[float, int, dict]] = []  # (score, epoch, state), best first, at most es.ensemble
    state = {"bad": 0, "best": float("inf")}
    history: list[dict] = []

    def evaluate(m, step_no):
        epoch = step_no // es.epoch_steps
        smp = _sample([m], schedule, cfg, enc, y_val, es.val_samples, cfg.seed + 7, device)
        score = forecast_metrics(_clip(smp, nonneg)[:, :, :, None], target[:, :, None])["crps"]
        best.append((score, epoch, copy.deepcopy(m.state_dict())))
        best.sort(key=lambda b: b[0])
        del best[es.ensemble:]
        state["bad"] = 0 if score < state["best"] else state["bad"] + 1
        state["best"] = min(state["best"], score)
        history.append({"epoch": epoch, "val_wql": score})
        if state["bad"] >= es.patience:
            raise _EarlyStop
        return {"val_wql": round(score, 6)}

    tcfg = replace(cfg.train, steps=es.epoch_steps * es.max_epochs, log_every=es.epoch_steps, seed=cfg.seed)
    t0 = time.time()
    try:
        train(model, schedule, WindowDataset(enc, train_pairs), tcfg, cfg.objective, run_dir=run_dir,
              config_dict=config_to_dict(replace(cfg, train=tcfg)), device=device, progress=progress,
              eval_fn=evaluate, eval_every=es.epoch_steps)
    except _EarlyStop:
        pass
    models = [_model(cfg, enc.cond_dim, sd, device) for _, _, sd in best]
    # the forecast as it will be made (the pooled samples of the ensemble), scored on the validation windows for
    # each spread factor; the best factor is kept (1.0 only: the pooled samples as they are)
    smp = _sample(models, schedule, cfg, enc, y_val, es.val_samples, cfg.seed + 11, device)
    spread, score = calibrate_spread(smp, target, es.spread_grid, nonneg, es.calibrate)
    fc = GlobalForecaster(models, schedule, cfg, layout, dict(zip(panel.ids, step.tolist())), spread, nonneg,
                          history, time.time() - t0, best[0][1], best[0][0], enc.cond_dim, score)
    fc.val_samples, fc.val_target = smp, target
    return fc


def calibrate_spread(smp: np.ndarray, target: np.ndarray, grid, nonneg: bool, rule: str = "wql") -> tuple[float, float]:
    """``(factor, wQL)``: the spread factor for samples ``smp: (B, S, H)`` of ``target: (B, H)`` and the wQL it scores.

    ``rule="wql"``: the factor of ``grid`` with the lowest wQL (``grid = (1.0,)``: the samples as they are).
    ``rule="coverage"``: of the factors from ``min(grid)`` to ``max(grid)`` in steps of :data:`COVERAGE_STEP`, the
    one whose 50/80/90 % intervals (:func:`coverage_error`) cover the target closest to nominal on average.
    """
    def wql(c):
        return forecast_metrics(_clip(apply_spread(smp, c), nonneg)[:, :, :, None], target[:, :, None])["crps"]

    if rule == "coverage":
        factors = np.round(np.arange(min(grid), max(grid) + 1e-9, COVERAGE_STEP), 6)
        errors = [coverage_error(_clip(apply_spread(smp, float(c)), nonneg), target) for c in factors]
        best = float(factors[int(np.argmin(errors))])
        return best, wql(best)
    scores = {c: wql(c) for c in grid}
    best = min(scores, key=scores.get)
    return best, scores[best]


def coverage_error(smp: np.ndarray, target: np.ndarray) -> float:
    """Mean over the reported intervals (:data:`~dforce.recipes.forecast.metrics.INTERVALS`) of |share of
    ``target: (B, H)`` inside the central interval of ``smp: (B, S, H)`` - nominal| (observed targets only)."""
    ok = np.isfinite(target)
    errs = []
    for c in INTERVALS:
        lo, hi = np.quantile(smp, [(1 - c / 100) / 2, (1 + c / 100) / 2], axis=1)
        errs.append(abs(((target >= lo) & (target <= hi))[ok].mean() - c / 100))
    return float(np.mean(errs))


def _pool(cfg: PanelForecastConfig, fits: list[GlobalForecaster]) -> GlobalForecaster:
    """One forecaster pooling the samples of ``fits`` (each its own representation, the same validation windows),
    the spread calibrated on the pool."""
    smp = np.concatenate([f.val_samples for f in fits], axis=1)
    first = fits[0]
    spread, score = calibrate_spread(smp, first.val_target, cfg.early_stop.spread_grid, first.nonnegative,
                                     cfg.early_stop.calibrate)
    return GlobalForecaster([], first.schedule, cfg, first.layout, first.step, spread, first.nonnegative,
                            first.history, 0.0, first.best_epoch, first.best_val_wql, first.cond_dim, score,
                            members=fits)


def _model(cfg: PanelForecastConfig, cond_dim: int, state: dict, device) -> torch.nn.Module:
    m = build_model(cfg.model, (1,), cfg.diffusion.num_levels, cond_dim)
    m.load_state_dict(state)
    return m.to(device).eval()


class _EarlyStop(Exception):
    """Raised from the evaluation hook to end training (the engine's loop has no stop signal)."""


def _targets(panel: Panel, pairs: np.ndarray, H: int) -> np.ndarray:
    """``(B, H)`` true values of the windows' forecast rows (NaN = missing or past the data)."""
    rows = pairs[:, 1:2] + np.arange(H)[None]
    inside = rows < panel.length
    return np.where(inside, panel.values[pairs[:, :1], np.minimum(rows, panel.length - 1)], np.nan)


def apply_spread(x: np.ndarray, spread: float) -> np.ndarray:
    """Widen (``spread > 1``) or narrow samples ``x: (B, S, H)`` about their mean over S."""
    if spread == 1.0:
        return x
    mean = x.mean(1, keepdims=True)
    return mean + spread * (x - mean)


def _clip(x: np.ndarray, nonneg: bool) -> np.ndarray:
    return np.maximum(x, 0.0) if nonneg else x


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def _sample(models, schedule: NoiseSchedule, cfg: PanelForecastConfig, enc: WindowEncoder, tok: Tokens,
            num_samples: int, seed: int, device, max_rows: int = 16384) -> np.ndarray:
    """``(B, S, H)`` decoded samples of the encoded windows ``tok`` (S split over the ensemble's models).

    The context is absorbed at level 0 where observed and as pure noise at level K where missing (what the
    objective shows the model for masked tokens); the horizon is then sampled from that state.
    """
    C, H = enc.layout.context, enc.layout.horizon
    K = schedule.num_levels
    gen = torch.Generator(device=device).manual_seed(seed)
    B = tok.x.shape[0]
    shares = np.diff(np.linspace(0, num_samples, len(models) + 1).round().astype(int))
    x = torch.from_numpy(tok.x).to(device)
    cond = torch.from_numpy(tok.cond).to(device)
    obs = torch.from_numpy(tok.mask[:, :C]).to(device)
    out = np.empty((B, num_samples, H))
    col = 0
    for model, S in zip(models, shares):
        if S == 0:
            continue
        per = max(1, max_rows // S)  # windows per chunk
        for a in range(0, B, per):
            b = min(B, a + per)
            levels = torch.where(obs[a:b], 0, K)  # (b-a, C)
            noise = torch.randn(x[a:b, :C].shape, generator=gen, device=device)
            ctx = schedule.add_noise(x[a:b, :C], levels, noise)  # missing tokens: pure noise at level K
            state = model.absorb(ctx, levels, cond[a:b, :C])
            state = model.repeat_state(state, int(S))
            res = sample(model, schedule, cfg.sampler, length=H, batch=(b - a) * int(S), token_shape=(1,),
                         cond=cond[a:b, C:].repeat_interleave(int(S), dim=0), state=state, generator=gen)
            out[a:b, col:col + S] = res.x[:, :, 0].float().cpu().numpy().reshape(b - a, int(S), H)
        col += S
    return enc.decode(out, tok)


def forecast(fc: GlobalForecaster, panel: Panel, origins, num_samples: int | None = None, seed: int = 0,
             device: str = "cpu") -> np.ndarray:
    """Sample forecasts of every series at every origin.

    Args:
        fc: the trained forecaster.
        panel: the data; rows ``>= origin`` are never read (known-future covariates excepted); an origin may
            be ``panel.length`` (forecast past the end; future covariates must then cover the horizon).
        origins: ``(W,)`` first forecast rows.
        num_samples: S (default ``cfg.num_samples``).

    Returns:
        ``(W, N, S, H)`` float64 samples; NaN for a series without ``min_context_observed`` values in the context.
    """
    origins = np.asarray(origins, dtype=np.int64).reshape(-1)
    S = num_samples or fc.cfg.num_samples
    if (origins > panel.length).any() or (origins < 1).any():
        raise DataError(f"forecast origins must lie in [1, {panel.length}], got {origins.tolist()}")
    if fc.members:  # a pool: each member's share of the paths, then the pool's spread
        shares = np.diff(np.linspace(0, S, len(fc.members) + 1).round().astype(int))
        raw = np.concatenate([_raw_forecast(m, panel, origins, int(k), seed + 101 * i, device)
                              for i, (m, k) in enumerate(zip(fc.members, shares))], axis=2)
    else:
        raw = _raw_forecast(fc, panel, origins, S, seed, device)
    W, N = raw.shape[:2]
    return _clip(apply_spread(raw.reshape(W * N, S, -1), fc.spread), fc.nonnegative).reshape(raw.shape)


def _raw_forecast(fc: GlobalForecaster, panel: Panel, origins: np.ndarray, S: int, seed: int, device) -> np.ndarray:
    """``(W, N, S, H)`` samples of one forecaster before its spread and clipping (NaN: too little context)."""
    H, C = fc.layout.horizon, fc.layout.context
    cut = panel.head(int(origins.max())) if origins.max() < panel.length else panel
    enc = WindowEncoder(cut, fc.layout, fc.steps_for(cut))
    n, w = np.meshgrid(np.arange(cut.n_series), np.arange(len(origins)))
    pairs = np.stack([n.ravel(), origins[w.ravel()]], 1)  # window-major
    rows = pairs[:, 1:2] + np.arange(-C, 0)[None]
    ok = ((rows >= 0) & (rows < cut.length))
    cnt = np.where(ok, cut.observed[pairs[:, :1], np.clip(rows, 0, cut.length - 1)], False).sum(1)
    good = cnt >= min(fc.layout.min_context_observed, C)
    out = np.full((len(pairs), S, H), np.nan)
    if good.any() and S > 0:
        tok = enc.encode(pairs[good, 0], pairs[good, 1])
        out[good] = _sample(fc.models, fc.schedule, fc.cfg, enc, tok, S, seed, device)
    return out.reshape(len(origins), cut.n_series, S, H)


# ----------------------------------------------------------------------------- saving


def save(fc: GlobalForecaster, run_dir: str | Path) -> None:
    """Write the ensemble's weights and ``forecast_meta.json`` next to the engine's ``config.yaml``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(fc.models):
        ckpt.save_weights(m, run_dir / BEST_FILE.format(i))
    for m in fc.members:  # a pool: each member in candidates/<representation>
        save(m, run_dir / "candidates" / m.layout.representation)
    lay = fc.layout
    meta = {"kind": "global", "layout": {"context": lay.context, "horizon": lay.horizon, "lags": list(lay.lags),
                                         "representation": lay.representation, "scale_floor": lay.scale_floor,
                                         "min_context_observed": lay.min_context_observed},
            "cond_dim": fc.cond_dim,
            "ensemble": len(fc.models), "step": fc.step, "spread": fc.spread, "nonnegative": fc.nonnegative,
            "history": fc.history, "seconds": fc.seconds, "best_epoch": fc.best_epoch,
            "best_val_wql": fc.best_val_wql, "val_wql": fc.val_wql, "candidates": fc.candidates,
            "members": [m.layout.representation for m in fc.members]}
    ckpt.save_yaml(config_to_dict(fc.cfg), run_dir / ckpt.CONFIG_FILE)
    ckpt.atomic_write_bytes(run_dir / META_FILE, json.dumps(meta, indent=2).encode())


def load(run_dir: str | Path, device: str = "cpu") -> GlobalForecaster:
    """Rebuild a forecaster written by :func:`fit` / :func:`save`."""
    run_dir = Path(run_dir)
    for name in (ckpt.CONFIG_FILE, META_FILE):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"{run_dir} is not a dforce forecast run (missing {name})")
    cfg = from_dict(PanelForecastConfig, ckpt.load_yaml(run_dir / ckpt.CONFIG_FILE))
    meta = json.loads((run_dir / META_FILE).read_text())
    if meta.get("kind") != "global":
        raise CheckpointError(f"{run_dir} holds another kind of forecast run (retrain it with this version)")
    members = [load(run_dir / "candidates" / r, device) for r in meta.get("members", [])]
    if not members and not (run_dir / BEST_FILE.format(0)).is_file():
        raise CheckpointError(f"{run_dir} is not a dforce forecast run (missing {BEST_FILE.format(0)})")
    lay = meta["layout"]
    layout = Layout(lay["context"], lay["horizon"], tuple(lay["lags"]), lay["representation"], lay["scale_floor"],
                    lay["min_context_observed"])
    models = []
    for i in range(meta["ensemble"]):
        m = build_model(cfg.model, (1,), cfg.diffusion.num_levels, meta["cond_dim"])
        ckpt.load_weights(m, run_dir / BEST_FILE.format(i))
        models.append(m.to(device).eval())
    return GlobalForecaster(models, NoiseSchedule(cfg.diffusion).to(device), cfg, layout, meta["step"],
                            meta["spread"], meta["nonnegative"], meta["history"], meta["seconds"],
                            meta["best_epoch"], meta["best_val_wql"], meta["cond_dim"], meta.get("val_wql", float("nan")),
                            meta.get("candidates", {}), members)
