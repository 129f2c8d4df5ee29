"""Synthetic chest-CT phantoms: the embedded default data of rrcunet (demo, tests, CPU training,
benchmarks).

:func:`generate_phantom` renders one seeded chest CT in HU with its label map (0 background,
1 lung, 2 tumour), lung-region mask and tumour ground truth; :func:`write_phantom_dataset`
writes a prepared dataset (NIfTI + manifest, optionally DICOM CT + RTSTRUCT + SEG). The model,
its parameters and its limitations are described in docs/phantoms.md.
"""

from rrcunet.synthetic.config import DIRECTIONS, LOCATIONS, PRESETS, TUMOUR_KINDS, PhantomConfig, TumourSpec
from rrcunet.synthetic.dataset import write_phantom_dataset
from rrcunet.synthetic.phantom import Phantom, PhantomFacts, TumourFacts, generate_phantom

__all__ = [
    "DIRECTIONS", "LOCATIONS", "PRESETS", "TUMOUR_KINDS", "Phantom", "PhantomConfig", "PhantomFacts",
    "TumourFacts", "TumourSpec", "generate_phantom", "write_phantom_dataset",
]
