"""Probabilistic forecasting (``dforce forecast``): users' tables, the global Diffusion Forcing forecaster, rolling
backtests against statsforecast / DeepAR, and the joint exchange-rate model of #4.

Public API (imported on first use, so ``import dforce.recipes.forecast`` stays cheap and needs no extras):
    load_panel, load_future_file, TableSpec  (tables.py: CSV/Parquet, long or wide)
    Panel, panel_from_array  (panel.py)
    resolve_frequency, season_length, calendar_features  (frequency.py)
    PanelForecastConfig  (global_model.py: the global forecaster; global_model.fit / forecast / load)
    rolling_origins, dforce_backtest  (backtest.py)
    stat_quantiles, deepar_samples  (practitioner_baselines.py)
    ForecastConfig, fit, forecast, load_run, forecast_targets  (recipe.py: the joint model of #4, exchange headline)
    crps_sum, forecast_metrics, energy_score, quantile_scores  (metrics.py)
    load_csv_series  (csv_series.py)
    load_exchange_rate_nips  (exchange_rate.py)
    MultivariateSeries, load_gluonts_dataset  (gluonts_format.py)
    plot_forecast_fan, plot_quantile_grid  (plots.py)
    naive_forecast, random_walk_forecast, var_forecast  (baselines.py)

Layout of this folder: data (``tables.py``, ``panel.py``, ``frequency.py``, ``csv_series.py``, ``gluonts_format.py``,
``exchange_rate.py``), the global forecaster (``tokens.py``, ``global_model.py``, ``backtest.py``), baselines
(``practitioner_baselines.py``, ``baselines.py``), the joint model of #4 (``features.py``, ``recipe.py``),
``metrics.py``, ``plots.py``, ``cli.py``, ``presets/``, ``assets/``. User guide: docs/forecast.md.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "tables": ['load_panel', 'load_future_file', 'TableSpec'],
    "panel": ['Panel', 'panel_from_array'],
    "frequency": ['resolve_frequency', 'season_length', 'calendar_features'],
    "global_model": ['PanelForecastConfig'],
    "backtest": ['rolling_origins', 'dforce_backtest'],
    "practitioner_baselines": ['stat_quantiles', 'deepar_samples'],
    "recipe": ['ForecastConfig', 'fit', 'forecast', 'load_run', 'forecast_targets'],
    "metrics": ['crps_sum', 'forecast_metrics', 'energy_score', 'quantile_scores'],
    "csv_series": ['load_csv_series'],
    "exchange_rate": ['load_exchange_rate_nips'],
    "gluonts_format": ['MultivariateSeries', 'load_gluonts_dataset'],
    "plots": ['plot_forecast_fan', 'plot_quantile_grid'],
    "baselines": ['naive_forecast', 'random_walk_forecast', 'var_forecast'],
})
