"""Datasets: the canonical prepared layout, its manifest, and (for training) cached loaders.

A prepared dataset folder holds::

    DATASET_DIR/
      manifest.json          # DatasetManifest: cases, provenance, split
      images/<case>.nii.gz   # CT in HU
      labels/<case>.nii.gz   # 0 background, 1 lung, 2 tumour
      lungs/<case>.nii.gz    # 0/1 lung region (the model's second input channel)

Importers (``rrcunet import``) and the phantom generator write this layout; the trainer reads it.
"""

from rrcunet.data.manifest import CaseEntry, DatasetManifest, Split, make_split

__all__ = ["CaseEntry", "DatasetManifest", "Split", "make_split"]
