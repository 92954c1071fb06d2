"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book.

    import ev2lib
    model = ev2lib.create_model("efficientnetv2_s", num_classes=10)

One concept per module, in the paper's words:

* the network: ``configs`` (Table 4 stage tables), ``scaling`` (compound scaling and rounding), ``blocks``
  (MBConv, Fused-MBConv), ``model`` (the builder), ``weights`` (published checkpoints);
* measuring it: ``summary`` (params, MACs, FLOPs, activation memory), ``bench`` (speed and memory);
* training it: ``data`` (input pipeline), ``train`` (the loop), ``progressive`` (Algorithm 1), ``ablations``
  (Tables 5, 12, 13), ``nas`` (training-aware search and its reward);
* plumbing: ``errors`` (every exception), ``files`` (atomic writes), ``results`` (reference results with
  provenance), ``book`` (chapter helpers).

Modules with a command line (``python -m ev2lib.summary|bench|train|nas|ablations``) are imported on demand,
e.g. ``from ev2lib.train import make_config, train``.
"""
__version__ = "0.1.0"

from . import blocks, configs  # noqa: E402
from .configs import ModelConfig, Stage, get_config, list_configs  # noqa: E402
from .errors import ConfigError, DataError, Ev2Error, InputSizeError, TrainingError, WeightsError  # noqa: E402
from .model import EfficientNet, create_model, list_models, swap_blocks  # noqa: E402
from .weights import convert_state_dict, load_pretrained  # noqa: E402
