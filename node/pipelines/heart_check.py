"""The organ-based heart check both pipelines share: the organ segmenter of a worker (loaded
once, remembering its last segmentation) and the flag `heart_not_in_field_of_view`.

The SEG's Content Description and the job log carry the flag when the segmented heart is
missing or cut by the scan's ends (models.organs.inference.heart_check). The calcium pipeline
can use the same evidence ([calcium] heart_check = "organs"); `SegmenterCache.segment` keeps
the last result keyed by the source instances, so when the calcium and organs jobs of one
series run in the same worker (they are made together and claimed in order) the network runs
once. Its own module so the calcium and organs pipelines both use it without importing each
other.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pydicom
import SimpleITK as sitk

from node.config import Settings

if TYPE_CHECKING:
    from models.organs.inference import OrganResult, OrganSegmenter

LOG = logging.getLogger("ctnode.worker")
HEART_FLAG = "heart_not_in_field_of_view"


class SegmenterCache:
    """One OrganSegmenter per worker, loaded at the first organs job (or at start when a route
    or the calcium heart check needs it); a failed load is tried again at the next job, so
    installing a model needs no restart. Also remembers the last segmentation (see the module
    docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._segmenter: OrganSegmenter | None = None
        self._last: tuple[str, OrganResult] | None = None
        self._lock = threading.Lock()

    def get(self) -> OrganSegmenter:
        from models.organs.inference import OrganSegmenter

        with self._lock:
            if self._segmenter is None:
                organs = self.settings.organs
                self._segmenter = OrganSegmenter(organs.spec_path(), device=organs.device)
            return self._segmenter

    def loaded(self) -> bool:
        return self._segmenter is not None

    def preload(self) -> None:
        """Load the model now (once: both pipelines may ask) and log how long it took, or why
        it is not usable."""
        from models.organs.registry import ModelFileError

        if self._segmenter is not None:
            return
        start = time.perf_counter()
        try:
            segmenter = self.get()
        except ModelFileError as error:
            LOG.error("organ model not usable, organs jobs will fail until it is: %s", error)
            return
        spec = segmenter.spec
        LOG.info(
            "organ model %s %s loaded on %s in %.1f s",
            spec.name,
            spec.version,
            segmenter.device,
            time.perf_counter() - start,
        )

    def segment(self, ct: sitk.Image, key: str) -> tuple[OrganResult, bool]:
        """The segmentation of `ct` and whether it was the remembered one (same `key`)."""
        segmenter = self.get()
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1], True
        result = segmenter.segment(ct)
        with self._lock:
            self._last = (key, result)
        return result, False


def source_key(source: Sequence[pydicom.Dataset], ct: sitk.Image) -> str:
    """Identifies one volume of one set of instances (the memo key of SegmenterCache)."""
    digest = hashlib.sha256()
    for uid in sorted(str(ds.SOPInstanceUID) for ds in source):
        digest.update(uid.encode() + b"\0")
    digest.update(repr((ct.GetSize(), ct.GetOrigin(), ct.GetSpacing())).encode())
    return digest.hexdigest()


def heart_flags(result: OrganResult) -> list[str]:
    """[HEART_FLAG] when the segmented heart is missing or cut by the scan, else []."""
    return heart_flags_and_reason(result)[0]


def heart_flags_and_reason(result: OrganResult) -> tuple[list[str], str]:
    """heart_flags and the check's reason for the job log (e.g. "heart 12 ml < 150 ml")."""
    from models.organs.inference import heart_check

    check = heart_check(result)
    return ([] if check.in_field_of_view else [HEART_FLAG]), check.reason
