"""CT series -> one CT volume (SimpleITK image in HU).

For now the basic reader that `ctnode score` and the evaluation use; grouping, series
selection and hardened assembly of real scanner output are the next step here.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def read_ct(path: Path):
    """A CT volume from a NIfTI/MHA file or a DICOM folder (the series with the most slices)."""

    if path.is_file():
        return sitk.ReadImage(str(path), sitk.sitkFloat32)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise ValueError(f"{path}: no DICOM image series found")
    files = max(
        (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len
    )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    if reader.HasMetaDataKey(0, "0018|0050"):  # slice thickness: the score uses it
        image.SetMetaData("0018|0050", reader.GetMetaData(0, "0018|0050").strip())
    return image
