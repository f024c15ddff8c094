"""The variant registry, data only: the spec schema, loading and validation, size presets, the
capacity rules and spec hashes. It imports neither torch nor the model: parameter counts come
from built modules, in ``gatelab.model.build``. Import the submodules directly
(``gatelab.registry.loader``, ...)."""
