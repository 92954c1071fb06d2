"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book.

    import ev2lib
    model = ev2lib.create_model("efficientnetv2_s", num_classes=10)

One concept per module, imports pointing down the README's map (no run imports ``report`` or ``book``, what the
chapters say and show). Modules with a command line run as ``python -m ev2lib.<module>``."""
__version__ = "0.2.0"

from . import blocks, configs  # noqa: E402,F401
from .configs import ModelConfig, Stage, get_config, list_configs  # noqa: E402,F401
from .errors import ConfigError, DataError, Ev2Error, InputSizeError, TrainingError, WeightsError  # noqa: E402,F401
from .model import EfficientNet, create_model, init_model, list_models, swap_blocks  # noqa: E402,F401
from .weights import convert_state_dict, load_pretrained  # noqa: E402,F401
