"""What a network is trained to do: the two tasks, each defined once.

Owns :class:`Task` and :data:`TASKS`. A task fixes the network's input channels, its output
classes (index = label value), the target label that is scored and sampled, and how the network
input is built from a CT and its lung region:

* ``"tumour"`` (the paper's model): input = CT + lung-region channel, cropped to the lungs;
  output = background / lung / tumour; target label 2.
* ``"lung"`` (the Coordinate-UNet lung extractor, paper ref. [31]): input = the CT only, the
  *whole* scan resized (at inference there is no lung mask yet to crop with); output =
  background / lung; target label 1.

Every module that needs one of these facts (training config, dataset cache, model files,
predictor, metrics, figures) reads it here.

Example::

    from rrcunet.tasks import get_task, TUMOUR_LABEL
    task = get_task("tumour")
    task.in_channels, task.out_channels, task.class_names   # 2, 3, ('background', 'lung', 'tumour')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrcunet.errors import ConfigError
from rrcunet.io.volume import Volume


@dataclass(frozen=True)
class Task:
    """One task.

    Args:
        name: ``"tumour"`` or ``"lung"``.
        in_channels: network input channels (CT, then the lung region when there are 2).
        class_names: output classes; index = label value = output channel.
        target_label: the class that is scored alone and sampled (tumour; lung for the lung task).
        crop_to_lungs: whether preprocessing crops to the lung region (else the whole scan).
    """

    name: str
    in_channels: int
    class_names: tuple[str, ...]
    target_label: int
    crop_to_lungs: bool

    @property
    def out_channels(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> dict[int, str]:
        """Label value → class name."""
        return dict(enumerate(self.class_names))

    @property
    def input_description(self) -> str:
        """A short description of the network input (part of the training cache's key)."""
        return "ct+lung, lung crop" if self.crop_to_lungs else "ct, whole scan"

    def lung_input(self, ct: Volume, lung: Volume | None) -> Volume:
        """The lung region handed to preprocessing: ``lung`` itself, or for a task that does not
        crop to the lungs a mask covering the whole scan, so the crop step keeps every voxel."""
        if self.crop_to_lungs:
            if lung is None:
                raise ConfigError(f"the {self.name!r} task needs the lung region of the CT")
            return lung
        return ct.with_array(np.ones(ct.shape, dtype=np.uint8), kind="label")


TASKS: dict[str, Task] = {
    "tumour": Task("tumour", 2, ("background", "lung", "tumour"), 2, True),
    "lung": Task("lung", 1, ("background", "lung"), 1, False),
}

#: The tumour task's class names and tumour label (the paper's three classes).
CLASS_NAMES: tuple[str, ...] = TASKS["tumour"].class_names
TUMOUR_LABEL: int = TASKS["tumour"].target_label


def get_task(name: str) -> Task:
    """The task called ``name``; :class:`ConfigError` listing the tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"task must be one of {sorted(TASKS)}, not {name!r}") from None
