"""A TF Serving model config for a registry model, its aliases as version labels."""

import os
from typing import Optional

from components import contracts
from registry import aliases as alias_lib
from registry import layout


def serving_config(registry, base_path: Optional[str] = None) -> str:
  """The config (text proto) of `registry` (an api.Registry) with the aliases
  as `version_labels`.

  It serves the newest version, every alias's version and the version each
  alias would roll back to: TF Serving moves a label only onto a loaded
  version, so a rollback then takes effect at the server's next config poll.
  """
  # pylint: disable=g-import-not-at-top
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  states = registry.aliases()
  aliases = {name: state['version'] for name, state in states.items()}
  served = {registry.latest().version, *aliases.values()}
  for state in states.values():
    served.update(alias_lib.promotion_stack(state['history'])[-2:])
  served = sorted(v for v in served
                  if layout.is_published(registry.registry_dir, registry.model_name, v))
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = registry.model_name
  model.base_path = base_path or (
      registry.model_dir if contracts.is_remote(registry.model_dir)
      else os.path.abspath(registry.model_dir))
  model.model_platform = 'tensorflow'
  model.model_version_policy.specific.versions.extend(served)
  for name, version in sorted(aliases.items()):
    model.version_labels[name] = version
  return text_format.MessageToString(config)
