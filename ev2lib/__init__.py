"""ev2lib: EfficientNetV2 (Tan & Le, ICML 2021) in compact, readable PyTorch, for the EfficientNetV2 book.

    import ev2lib
    model = ev2lib.create_model("efficientnetv2_s", num_classes=10)

One concept per module, in the paper's words; imports point one way, down this list:

* ground floor: ``errors`` (every exception), ``files`` (atomic writes, caches), ``stats`` (intervals, ranks);
* the network: ``scaling`` (compound scaling and rounding), ``configs`` (Table 4 stage tables), ``blocks`` (MBConv,
  Fused-MBConv), ``weights`` (published and saved weights), ``model`` (the builder, Table 3 swaps, init from
  weights), ``summary`` (params, MACs, FLOPs, activation memory);
* the input: ``randaugment`` (RandAugment's official ops), ``augment`` (crops, flips, mixup/CutMix; per image and
  per batch), ``data`` (datasets, splits, batches);
* training: ``progressive`` (Algorithm 1), ``recipe`` (TrainConfig, profiles, optimizer, LR schedule, fine-tuning
  recipes), ``train`` (the step and the loop), ``bench`` and ``fast_path`` (speed and memory);
* search: ``nas`` (search space, reward), ``proxy`` (training-aware evaluation), ``search`` (strategies, log, CLI);
* experiments: ``ablations`` (Tables 5, 7, 12, 13), ``transfer`` (§5.3); ``results`` (reference results with
  provenance); ``report`` and ``book`` (what the chapters say and show; never imported by a run).

Modules with a command line (``python -m ev2lib.summary|bench|fast_path|train|search|ablations|transfer``) are
imported on demand, e.g. ``from ev2lib.train import make_config, train``.
"""
__version__ = "0.2.0"

from . import blocks, configs  # noqa: E402,F401
from .configs import ModelConfig, Stage, get_config, list_configs  # noqa: E402,F401
from .errors import ConfigError, DataError, Ev2Error, InputSizeError, TrainingError, WeightsError  # noqa: E402,F401
from .model import EfficientNet, create_model, init_model, list_models, swap_blocks  # noqa: E402,F401
from .weights import convert_state_dict, load_pretrained  # noqa: E402,F401
