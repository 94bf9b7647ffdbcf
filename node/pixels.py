"""One frame's pixels: stored values -> Hounsfield units (int16), air where there is no data.

Uncompressed little-endian frames are read straight from their byte offset (no dataset is
parsed a second time); everything else (JPEG Lossless, JPEG-LS, JPEG 2000, RLE, big-endian,
deflated) is decoded by pydicom with the installed plugins (python-gdcm, pylibjpeg-openjpeg,
pylibjpeg-rle, pyjpegls).
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import pixel_array

from node.dicom_headers import FrameHeader, PixelLayout

AIR_HU = -1024  # what padding and out-of-field pixels become
INT16_MAX = np.iinfo(np.int16).max


class PixelDataError(ValueError):
    """Pixel data that cannot be read or decoded (truncated file, missing decoder, ...)."""


def read_stored(frame: FrameHeader) -> np.ndarray:
    """The frame's stored values (rows x columns), sign and unused high bits handled."""
    layout = frame.pixels
    if layout is None:
        raise PixelDataError(f"{frame.sop_uid}: no pixel data")
    if layout.native_offset is not None and layout.bits_allocated in (8, 16, 32):
        return _read_native(frame, layout)
    try:
        values = pixel_array(frame.path, index=frame.frame)
    except Exception as error:  # noqa: BLE001 - decoders raise many types; all mean "cannot decode"
        raise PixelDataError(
            f"{frame.sop_uid}: cannot decode pixel data (transfer syntax "
            f"{layout.transfer_syntax}): {error}"
        ) from error
    if values.shape != (frame.rows, frame.columns):
        raise PixelDataError(f"{frame.sop_uid}: decoded shape {values.shape} is not one frame")
    return values


def _read_native(frame: FrameHeader, layout: PixelLayout) -> np.ndarray:
    nbytes = layout.bits_allocated // 8
    dtype = np.dtype(f"<{'i' if layout.signed else 'u'}{nbytes}")
    count = frame.rows * frame.columns
    offset = layout.native_offset + (frame.frame or 0) * count * nbytes  # type: ignore[operator]
    values = np.fromfile(frame.path, dtype=dtype, count=count, offset=offset)
    if values.size != count:
        raise PixelDataError(f"{frame.sop_uid}: pixel data truncated ({values.size} of {count})")
    values = values.reshape(frame.rows, frame.columns)
    unused = layout.bits_allocated - layout.bits_stored
    if unused > 0:
        # Bits above High Bit are not pixel data (PS3.5 8.1.1): sign-extend or mask them.
        if layout.signed:
            values = (values << unused) >> unused
        else:
            values = values & np.array((1 << layout.bits_stored) - 1, dtype)
    return values


def to_hu(stored: np.ndarray, frame: FrameHeader) -> np.ndarray:
    """HU = stored x slope + intercept, as int16, with padding and anything below air -> air.

    Padding is recognised on stored values (PixelPaddingValue, or the range up to
    PixelPaddingRangeLimit); scanners that mark the outside of the field of view without it
    use -2000, -2048 or -3024 HU, which the clip to air catches."""
    layout = frame.pixels
    if frame.slope == 1.0 and float(frame.intercept).is_integer():
        hu = stored.astype(np.int32) + int(frame.intercept)
    else:
        hu = np.rint(stored * frame.slope + frame.intercept).astype(np.int32)
    if layout is not None and layout.padding_value is not None:
        low = layout.padding_value
        high = layout.padding_limit if layout.padding_limit is not None else low
        low, high = min(low, high), max(low, high)
        hu[(stored >= low) & (stored <= high)] = AIR_HU
    np.clip(hu, AIR_HU, INT16_MAX, out=hu)
    return hu.astype(np.int16)
