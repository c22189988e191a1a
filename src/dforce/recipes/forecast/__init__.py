"""Probabilistic multivariate forecasting (``dforce forecast``): GluonTS-format data, CSV series, the exchange-rate benchmark, baselines, CRPS metrics and fan charts.

Public API (imported on first use, so ``import dforce.recipes.forecast`` stays cheap and needs no extras):
    ForecastConfig, fit, forecast, load_run, forecast_targets  (recipe.py)
    crps_sum, forecast_metrics, energy_score  (metrics.py)
    load_csv_series  (csv_series.py)
    load_exchange_rate_nips  (exchange_rate.py)
    MultivariateSeries, load_gluonts_dataset  (gluonts_format.py)
    plot_forecast_fan  (plots.py)
    naive_forecast, random_walk_forecast, var_forecast  (baselines.py)

Layout of this folder: ``gluonts_format.py``/``csv_series.py``/``exchange_rate.py`` (data), ``features.py``, ``recipe.py`` (model, fit, forecast), ``baselines.py``, ``metrics.py``, ``plots.py``, ``cli.py``, ``presets/``, ``assets/``.
"""

from dforce.recipes._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "recipe": ['ForecastConfig', 'fit', 'forecast', 'load_run', 'forecast_targets'],
    "metrics": ['crps_sum', 'forecast_metrics', 'energy_score'],
    "csv_series": ['load_csv_series'],
    "exchange_rate": ['load_exchange_rate_nips'],
    "gluonts_format": ['MultivariateSeries', 'load_gluonts_dataset'],
    "plots": ['plot_forecast_fan'],
    "baselines": ['naive_forecast', 'random_walk_forecast', 'var_forecast'],
})
