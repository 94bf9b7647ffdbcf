"""What every pipeline is to the worker: a name, a way to load its models before the first job,
and `run`, which turns one job's series into result objects in the outbox.

node.pipelines.registry makes one of each for a worker; the worker looks a job's pipeline up
there by the name its route gave it ([[routes]] pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from node.jobs import OutputFile
from node.pipelines.series_reading import SeriesFiles

# report(stage, message): one `job.stage.<stage>` line in the job log (what the stage found
# and its time; no patient data).
Report = Callable[[str, str], None]


class Pipeline(Protocol):
    name: str  # as [[routes]] pipeline and the jobs table name it

    def preload(self) -> None:
        """Load the models this pipeline will need, before the first job (torch and the
        weights take seconds); log the time, or the reason a model is not usable (each job
        then fails with it until the model is installed). Never raises for a missing model."""

    def models_loaded(self) -> bool:
        """Whether the pipeline's main model is loaded (the health check's `model`)."""

    def run(self, job_id: int, files: SeriesFiles, report: Report) -> list[OutputFile]:
        """Read the series, run the models, write the result objects to the outbox; their rows.

        Raises BadSeriesError when the series cannot be used (retrying cannot help), a
        ModelFileError when a model is missing or tampered with, OSError for the node's own
        trouble (both retryable)."""
