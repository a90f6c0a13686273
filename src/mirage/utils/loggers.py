"""Lightning's CSV and TensorBoard loggers, made to continue a resumed run's history instead of starting
their files afresh (``resume_step``, set by ``mirage.utils.logging.instantiate_loggers``)."""

from __future__ import annotations

import csv
import logging
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class _ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued rather than deleted: rows
    logged before ``resume_step`` stay as they are, rows from it on (the resumed run logs them again) go."""

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for number, row in enumerate(rows, 1) if self._step(row, number) < self.resume_step]
        self.metrics_keys = header  # later rows append under the same header (widened if new keys come)
        if len(kept) < len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
        log.info(
            "continuing %s: kept %d rows before step %d", self.metrics_file_path, len(kept), self.resume_step
        )

    def _step(self, row: dict[str, str], number: int) -> float:
        try:
            return float(row.get("step") or "")
        except ValueError:
            raise ValueError(
                f"{self.metrics_file_path}: row {number}: field 'step': not a number ({row.get('step')!r}); "
                "cannot tell which rows come before the checkpoint"
            ) from None


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger``; with ``resume_step`` (set by mirage-train when it resumes from a
    checkpoint), ``metrics.csv`` keeps the rows logged before that step instead of being deleted."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedExperimentWriter(self.log_dir, self.resume_step)
        return super().experiment


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``; with ``resume_step`` (set by mirage-train when it resumes), the new
    event file tells TensorBoard to hide the killed run's events from that step on (``purge_step``), which the
    resumed run logs again; the events before it stay."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        if resume_step is not None:
            kwargs["purge_step"] = resume_step
        super().__init__(*args, **kwargs)
