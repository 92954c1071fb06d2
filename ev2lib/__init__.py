"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book.

    import ev2lib
    model = ev2lib.create_model("efficientnetv2_s", num_classes=10)

One concept per module: ``configs`` (stage tables), ``blocks``, ``model``, ``weights``, ``summary``, ``bench``,
``data``, ``train``, ``checkpoint``, ``progressive``, ``ablations``, ``scaling``, ``nas``, ``search``, ``results``.
Modules with a command line (``python -m ev2lib.summary|bench|train|search|ablations``) are imported on demand,
e.g. ``from ev2lib.train import make_config, train``.
"""
__version__ = "0.1.0"

from . import blocks, configs  # noqa: E402
from .configs import ModelConfig, Stage, get_config, list_configs  # noqa: E402
from .errors import ConfigError, Ev2Error, InputSizeError, WeightsError  # noqa: E402
from .model import EfficientNet, create_model, list_models  # noqa: E402
from .weights import convert_state_dict, load_pretrained  # noqa: E402
