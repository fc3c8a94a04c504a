"""brainmri: train, evaluate and deploy ResNet classifiers for brain tumours on MRI slices.

The Python API lives in the subpackages (``brainmri.data``, ``brainmri.training``,
``brainmri.evaluation``, ``brainmri.inference`` ...); the ``brainmri`` command is a thin
layer over them.
"""

from brainmri.errors import BrainMRIError
from brainmri.labels import CLASSES

__version__ = "0.1.0"
__all__ = ["BrainMRIError", "CLASSES", "__version__"]
