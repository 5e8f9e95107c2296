"""Causal market features and strategy positions: the values of day t use prices up to and including t only.

``raw_features(prices)`` (T, F) and ``strategy_positions(price)`` (T, 8), used by ``trm_env.market`` to
build the market task; docs/market_task.md defines every feature and strategy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["POSITION_BOUNDS", "STRATEGY_NAMES", "TRADING_DAYS", "raw_features", "strategy_positions"]

STRATEGY_NAMES = (
    "buy_and_hold",
    "defensive",
    "volatility_targeted",
    "momentum_scaled",
    "ma_trend",
    "mean_reversion",
    "breakout",
    "drawdown_scaled",
)
# (floor, cap) per strategy: distinct bounds keep two strategies from sitting on the same bound for a week.
POSITION_BOUNDS = {
    "buy_and_hold": (1.0, 1.0),
    "defensive": (0.5, 0.8),
    "volatility_targeted": (0.2, 1.6),
    "momentum_scaled": (0.1, 2.0),
    "ma_trend": (0.15, 1.8),
    "mean_reversion": (0.3, 1.75),
    "breakout": (0.1, 1.6),
    "drawdown_scaled": (0.25, 0.95),
}
TRADING_DAYS = 252



def _log_returns(price: pd.Series) -> pd.Series:
    return np.log(price).diff()


def _safe_ratio(num: pd.Series, den: pd.Series, fill: float) -> pd.Series:
    """num / den, ``fill`` where den == 0 (NaN stays NaN)."""
    return (num / den.where(den != 0)).where(den != 0, fill).where(num.notna() & den.notna())


def _range_position(price: pd.Series, window: int) -> pd.Series:
    """Where the price sits in its ``window``-day min..max range: 0 at the low, 1 at the high."""
    low = price.rolling(window).min()
    high = price.rolling(window).max()
    return _safe_ratio(price - low, high - low, 0.5)


def _realized_vol(log_ret: pd.Series, window: int) -> pd.Series:
    """Annualised standard deviation of daily log returns over ``window`` days."""
    return log_ret.rolling(window).std() * np.sqrt(TRADING_DAYS)


def _drawdown(price: pd.Series, window: int) -> pd.Series:
    return price / price.rolling(window).max() - 1.0


def _rsi(log_ret: pd.Series, window: int) -> pd.Series:
    """Wilder RSI rescaled to [-1, 1]: (gain - loss) / (gain + loss) with EMA(alpha=1/window)."""
    gain = log_ret.clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    loss = (-log_ret).clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    return _safe_ratio(gain - loss, gain + loss, 0.0)


def strategy_positions(price: pd.Series) -> pd.DataFrame:
    """Positions (T, 8) decided at each close from prices up to that day, each clipped to its own bounds."""
    log_ret = _log_returns(price)
    daily_vol_21 = log_ret.rolling(21).std()
    momentum_z = np.log(price / price.shift(126)) / (log_ret.rolling(63).std() * np.sqrt(126))
    reversal_z = np.log(price / price.shift(5)) / (daily_vol_21 * np.sqrt(5))
    raw = {
        "buy_and_hold": pd.Series(1.0, index=price.index),
        "defensive": 0.5 + 0.3 * _range_position(price, TRADING_DAYS),
        "volatility_targeted": 0.10 / (daily_vol_21 * np.sqrt(TRADING_DAYS)),
        "momentum_scaled": 1.0 + 0.5 * momentum_z,
        "ma_trend": 1.0 + 15.0 * np.log(price / price.rolling(50).mean()),
        "mean_reversion": 1.0 - 0.25 * reversal_z,
        "breakout": 0.1 + 1.5 * _range_position(price, 20),
        "drawdown_scaled": 0.95 + 4.0 * _drawdown(price, TRADING_DAYS),
    }
    return pd.DataFrame({name: raw[name].clip(*POSITION_BOUNDS[name]) for name in STRATEGY_NAMES})


def raw_features(prices: pd.DataFrame) -> pd.DataFrame:
    """Unstandardised features (T, F) of a canonical price frame; NaN during the warm-up.

    Intraday features need open/high/low/close and volume features need volume; absent columns skip them.
    """
    price = prices["price"]
    log_ret = _log_returns(price)
    features: dict[str, pd.Series] = {}
    for lag in (1, 2, 5, 10, 21, 63, 126, 252):
        features[f"ret_{lag}"] = np.log(price / price.shift(lag))
    for window in (5, 10, 21, 63):
        features[f"vol_{window}"] = _realized_vol(log_ret, window)
    for window in (10, 21, 50, 200):
        features[f"ma_dist_{window}"] = np.log(price / price.rolling(window).mean())
    for window in (63, 252):
        features[f"drawdown_{window}"] = _drawdown(price, window)
    features["rsi_14"] = _rsi(log_ret, 14)
    for window in (20, 63):
        features[f"range_pos_{window}"] = _range_position(price, window)
    if {"high", "low"} <= set(prices.columns):
        high, low = prices["high"], prices["low"]
        features["hl_range_1"] = np.log(high / low)
        features["hl_range_10"] = features["hl_range_1"].rolling(10).mean()
        if "close" in prices.columns:
            features["close_loc"] = _safe_ratio(prices["close"] - low, high - low, 0.5)
    if {"open", "close"} <= set(prices.columns):
        features["gap"] = np.log(prices["open"] / prices["close"].shift(1))
    if "volume" in prices.columns:
        volume = prices["volume"]
        mean_21, std_21 = volume.rolling(21).mean(), volume.rolling(21).std()
        features["volume_z_21"] = _safe_ratio(volume - mean_21, std_21, 0.0)
        features["volume_ratio_63"] = _safe_ratio(volume, volume.rolling(63).mean(), 1.0)
    positions = strategy_positions(price).drop(columns="buy_and_hold")  # constant 1.0: no information
    return pd.concat([pd.DataFrame(features), positions.add_prefix("pos_")], axis=1)
