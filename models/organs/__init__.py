"""Organ segmentation: the published sparse-label 3D U-Net (Humpire-Mamani et al., arXiv
2311.05032), its weight loaders and its inference entry point."""
