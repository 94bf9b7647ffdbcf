"""Result objects sent back to the PACS, all in the source study, each in a new series.

sr       TID 1500 Imaging Measurement Report with the calcium scores; read_calcium_sr
seg      BINARY Segmentation of the decision-feedback regions, one segment per artery
capture  Secondary Capture with the overlay and the score burned in; save_png
regions  which voxels carry the score (the threshold shared by seg and capture)
source   checks on the source series and its mapping onto the CT volume
codes    the coded concepts; equipment: manufacturer, versions, algorithm identity
"""
