"""The label table shared by the phantom generator, the models and the node.

Values 1-22 follow the output channels of the published sparse-label 3D U-Net
(Humpire-Mamani et al., arXiv 2311.05032): label value = U-Net channel + 1, so that 0 can mean
"background" in a label map (the network puts background in its last channel, 22). Values from
30 on are structures that network does not have: bones it lumps into background, the coronary
tree and the calcifications that the Agatston score counts or must not count.
"""

from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0
    # --- the published U-Net's 22 structures (channel = value - 1) ---
    AORTA = 1
    BLADDER = 2
    DUODENUM = 3
    GALLBLADDER = 4
    HEART = 5
    INFERIOR_VENA_CAVA = 6
    LEFT_ADRENAL = 7
    LEFT_KIDNEY = 8
    LEFT_LUNG = 9
    LEFT_PSOAS_MAJOR = 10
    LIVER = 11
    PANCREAS = 12
    PORTAL_SPLENIC_VEIN = 13
    RIGHT_ADRENAL = 14
    RIGHT_KIDNEY = 15
    RIGHT_LUNG = 16
    RIGHT_PSOAS_MAJOR = 17
    SPINAL_CORD = 18
    SPLEEN = 19
    STERNUM = 20
    STOMACH = 21
    TRACHEA = 22
    # --- structures the published network lacks ---
    VERTEBRAE = 30
    RIBS = 31
    ESOPHAGUS = 32
    SUBCUTANEOUS_FAT = 33
    MUSCLE = 34
    EPICARDIAL_FAT = 35
    CORONARY_ARTERY = 36  # non-calcified vessel (lumen and wall)
    PULMONARY_VESSELS = 37
    MAIN_BRONCHI = 38
    SPINAL_CANAL = 39  # CSF around the cord
    # Coronary calcifications: what the Agatston score counts.
    CAC_LEFT_MAIN = 40
    CAC_LAD = 41
    CAC_LCX = 42
    CAC_RCA = 43
    # Calcifications that must NOT count (confounders).
    AORTIC_WALL_CALCIFICATION = 50
    AORTIC_VALVE_CALCIFICATION = 51
    MITRAL_ANNULUS_CALCIFICATION = 52
    # Incidental calcifications outside the heart and aorta (phantom generator version 2).
    LYMPH_NODE_CALCIFICATION = 53
    AIRWAY_CARTILAGE_CALCIFICATION = 54
    LUNG_GRANULOMA_CALCIFICATION = 55
    PATIENT_TABLE = 60
    # Implanted metal (phantom generator version 3): coronary stents, pacemaker leads.
    DEVICE = 61


UNET_CHANNELS: tuple[Label, ...] = tuple(Label(v) for v in range(1, 23))
"""The published U-Net's output channels 0-21 in order (channel 22 is background)."""

ARTERIES: tuple[str, ...] = ("LAD", "LCX", "RCA")
"""Arteries the score is reported for; the left main counts as LAD (REFERENCE.md section 2)."""

CAC_LABEL_TO_ARTERY: dict[int, str] = {
    Label.CAC_LEFT_MAIN: "LAD",
    Label.CAC_LAD: "LAD",
    Label.CAC_LCX: "LCX",
    Label.CAC_RCA: "RCA",
}
"""Which reported artery each coronary-calcium label value is scored under."""


def label_table() -> dict[int, str]:
    """Label value -> lower-case name, as written into truth.json and model cards."""
    return {int(label): label.name.lower() for label in Label}
