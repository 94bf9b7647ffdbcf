"""One frame's pixels: stored values -> Hounsfield units (int16), air where there is no data.

Uncompressed little-endian frames are read straight from their byte offset (no dataset is
parsed a second time); everything else (JPEG Lossless, JPEG-LS, JPEG 2000, RLE, big-endian,
deflated) is decoded by pydicom with the installed plugins (python-gdcm, pylibjpeg-openjpeg,
pylibjpeg-rle, pyjpegls).
"""

from __future__ import annotations

import numpy as np
from pydicom.pixels import pixel_array

from node.volume.headers import FrameHeader, PixelLayout

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
            values <<= unused
            values >>= unused
        else:
            values &= np.array((1 << layout.bits_stored) - 1, dtype)
    return values


def to_hu(stored: np.ndarray, frame: FrameHeader, out: np.ndarray | None = None) -> np.ndarray:
    """HU = stored x slope + intercept, as int16, with padding and anything below air -> air.

    Written into `out` (an int16 rows x columns array, e.g. a slice of the volume) when given.
    Padding is recognised on stored values (PixelPaddingValue, or the range up to
    PixelPaddingRangeLimit); scanners that mark the outside of the field of view without it
    use -2000, -2048 or -3024 HU, which the clip to air catches."""
    if out is None:
        out = np.empty(stored.shape, np.int16)
    layout = frame.pixels
    padding = None
    if layout is not None and layout.padding_value is not None:
        low = layout.padding_value
        high = layout.padding_limit if layout.padding_limit is not None else low
        padding = (stored >= min(low, high)) & (stored <= max(low, high))
    if _fits_int16(stored, frame):
        # The common case (slope 1, integer intercept, 12-16 stored bits): computed in place in
        # int16. Each temporary of a 512 x 512 slice is a fresh mmap and its page faults, which
        # cost more than the arithmetic, so the general path below is kept for the rest.
        out[...] = stored
        out += np.int16(int(frame.intercept))
    else:
        if frame.slope == 1.0 and float(frame.intercept).is_integer():
            hu = stored.astype(np.int32) + int(frame.intercept)
        else:
            hu = np.rint(stored * frame.slope + frame.intercept).astype(np.int32)
        np.clip(hu, AIR_HU, INT16_MAX, out=hu)
        out[...] = hu
    if padding is not None:
        out[padding] = AIR_HU
    np.maximum(out, AIR_HU, out=out)
    return out


def _fits_int16(stored: np.ndarray, frame: FrameHeader) -> bool:
    """Whether stored + intercept stays within int16 for every value the stored bits allow."""
    layout = frame.pixels
    if layout is None or frame.slope != 1.0 or not float(frame.intercept).is_integer():
        return False
    if stored.dtype.kind not in "iu" or layout.bits_stored > 16:
        return False
    bits = layout.bits_stored
    low, high = (
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if layout.signed else (0, (1 << bits) - 1)
    )
    if stored.dtype.kind == "u" and high > INT16_MAX:
        return False  # 16 stored bits unsigned: values above 32767 would wrap when copied
    intercept = int(frame.intercept)
    return low + intercept >= np.iinfo(np.int16).min and high + intercept <= INT16_MAX
