"""rrcunet: RRc-UNet 3D lung-tumour segmentation for chest CT (Le & Saut).

The package layout follows the pipeline:

``io`` (read/write CT and contours) → ``preprocessing`` (the paper's §4.1 steps, invertible)
→ ``lungmask`` (the lung-parenchyma input channel) → ``models`` (RRc-UNet 3D and the ablation
blocks) → ``losses`` → ``training`` / ``inference`` → ``evaluation`` (metrics) → ``visualization``
(figures and reports). ``synthetic`` generates chest-CT phantoms, the embedded default data.
``cli`` is a thin command-line layer over these functions.
"""

from rrcunet.errors import RRcUNetError

__version__ = "0.1.0"

__all__ = ["RRcUNetError", "__version__"]
