"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book."""
from .configs import ModelConfig, Stage, get_config, list_configs
from .errors import ConfigError, Ev2Error, InputSizeError, WeightsError
from .model import EfficientNet, create_model, list_models

__version__ = "0.1.0"
from .weights import convert_state_dict, load_pretrained
