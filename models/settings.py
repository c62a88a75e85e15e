"""What Transform's and the Trainer's module files are told, typed.

TFX hands a module file its `custom_config` as a JSON dict. pipeline/dag.py
builds that dict with `to_custom_config` and each module file parses it once
with `from_custom_config`, so the model code reads `settings.training.seed`
with the types of pipeline/config.py, never `config['training']['seed']`, and
the two ends cannot drift apart. Keys TFX adds for its own use (the Vertex AI
Training arguments) are left to TFX.
"""

import dataclasses
from typing import Any, Dict, Mapping, Tuple

from pipeline.config import (AugmentationConfig, DataQualityConfig, ModelConfig,
                             OodConfig, SemiSupervisedConfig, TrainingConfig)

# The configuration sections the model code reads, as they are in Config.
_SECTIONS = {
    'model': ModelConfig,
    'augmentation': AugmentationConfig,
    'training': TrainingConfig,
    'semi_supervised': SemiSupervisedConfig,
    'data_quality': DataQualityConfig,
    'ood': OodConfig,
}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """The classes, the input size and the sections of the run's Config."""
  class_names: Tuple[str, ...]   # the schema's label domain, in class-id order
  image_size: int                # model.image_size, or the backbone's default
  max_image_pixels: int          # data.max_image_pixels
  model: ModelConfig
  augmentation: AugmentationConfig
  training: TrainingConfig
  semi_supervised: SemiSupervisedConfig
  data_quality: DataQualityConfig
  ood: OodConfig

  def to_custom_config(self) -> Dict[str, Any]:
    """The JSON-ready dict a TFX component passes to its module file."""
    return {'class_names': list(self.class_names), 'image_size': self.image_size,
            'max_image_pixels': self.max_image_pixels,
            **{name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}}

  @classmethod
  def from_custom_config(cls, custom_config: Mapping[str, Any]) -> 'ModelSettings':
    return cls(class_names=tuple(custom_config['class_names']),
               image_size=int(custom_config['image_size']),
               max_image_pixels=int(custom_config['max_image_pixels']),
               **{name: section(**custom_config[name])
                  for name, section in _SECTIONS.items()})
