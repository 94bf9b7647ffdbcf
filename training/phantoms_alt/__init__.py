"""A second synthetic chest-CT style, for evaluation only (issue 25 item 4).

Written apart from `models/phantoms` (nothing is imported from it; a test checks that) so that
a model trained on that generator can be measured on phantoms it was not shaped by: another
anatomy model (a superellipsoid heart with chamber ellipsoids and coronary courses on its
epicardial surface, dominance variants), another lesion renderer (supersampled partial-volume
shapes through the slice-sensitivity profile), another noise model (white noise shaped by a
kernel-dependent noise power spectrum) and its own DICOM writer.

Never train on this style or choose anything with it: it only measures.

    python -m training.phantoms_alt --out DIR --n N --seed S [--dicom] [--fov] [--contrast]

Modules: grid (voxel grid and written orientation), acquisition (scan parameters, kVp
factors), body (trunk, lungs, bones, aorta, airways), heart (heart shape and coronary courses),
lesions (calcification shapes and their renderer), noise (resolution and noise), case (one
case: assembly, category balance, truth), variants (cardiac field of view, contrast), dicom
(the series writer), output (files on disk).
"""

GENERATOR = "phantoms_alt"
VERSION = "1"
