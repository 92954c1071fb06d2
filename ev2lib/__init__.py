"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book.

    import ev2lib
    model = ev2lib.create_model("efficientnetv2_s", num_classes=10)
    ev2lib.train.train(ev2lib.make_config("smoke"))      # the training loop (ev2lib.train)
"""
__version__ = "0.1.0"

from . import blocks, configs, summary  # noqa: E402
from .configs import ModelConfig, Stage, get_config, list_configs  # noqa: E402
from .errors import ConfigError, Ev2Error, InputSizeError, WeightsError  # noqa: E402
from .model import EfficientNet, create_model, list_models  # noqa: E402
from .weights import convert_state_dict, load_pretrained  # noqa: E402
from .data import load_data  # noqa: E402
from .train import TrainConfig, make_config  # noqa: E402
from . import train  # noqa: E402  (the module: ev2lib.train.train(cfg) runs a training)
