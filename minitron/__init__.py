"""minitron: prune and distil Hugging Face LLMs the way NVIDIA made the Minitron models.

The whole recipe is `minitron.compress(...)`; each stage is a function too: `minitron.build_data`,
`minitron.score`, `minitron.prune.prune`, `minitron.distill.distill`, `minitron.evaluate`.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "compress": "minitron.pipeline",
    "score": "minitron.importance",
    "evaluate": "minitron.eval",
    "build_data": "minitron.data",
}


def __getattr__(name: str):
    """Import lazily, so `import minitron` stays cheap."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'minitron' has no attribute {name!r}")
