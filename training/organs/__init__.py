"""Organ-segmentation training: sparse-label base model and transfer-learning study."""
