"""Domain-shift adaptation tasks: thyroid male→female, digits even→odd, synthetic sensor drift,
and user CSV files."""

from __future__ import annotations

from halo.tasks.base import DomainData, DomainShiftTask
from halo.tasks.csv_task import csv_files_task, csv_task
from halo.tasks.digits import digits_task
from halo.tasks.drift import DriftSettings, drift_task
from halo.tasks.thyroid import thyroid_task

__all__ = [
    "DomainData",
    "DomainShiftTask",
    "DriftSettings",
    "csv_files_task",
    "csv_task",
    "digits_task",
    "drift_task",
    "thyroid_task",
]
