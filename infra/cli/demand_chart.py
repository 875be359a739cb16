"""The demand curve as a PNG: units willing at each price, against the price schedule."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt

from analysis.demand_curve import DemandCurve, schedule_steps
from domain.pricing import PriceSchedule
from infra.cli.common import CommandError


def draw(curve: DemandCurve, schedule: PriceSchedule, path: Path) -> None:
    """Price on the vertical axis, units on the horizontal, as demand curves are drawn."""
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        prices = [float(point.max_unit_price) for point in curve.points]
        willing = [point.willing for point in curve.points]
        if prices:
            axes.step(willing, prices, where="pre", marker="o", label="units willing at price")
        if curve.unconditional:
            axes.axvline(curve.unconditional, linestyle=":", label="units at any price")
        steps = schedule_steps(schedule, max(curve.total, 1) * 2)
        axes.step(
            [q for q, _ in steps],
            [float(p) for _, p in steps],
            where="post",
            label="price schedule",
        )
        axes.plot(
            [curve.filled_quantity],
            [float(curve.clearing_price)],
            "s",
            label=f"clears at {curve.clearing_price} ({curve.filled_quantity} units)",
        )
        axes.set(
            title=f"{curve.campaign_id}: demand curve",
            xlabel="units",
            ylabel=f"unit price ({curve.currency})",
        )
        axes.legend()
        axes.grid(alpha=0.3)
        try:
            figure.savefig(path, format="png")
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        plt.close(figure)
