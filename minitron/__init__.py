"""minitron: prune and distil Hugging Face LLMs the way NVIDIA made the Minitron models."""

__version__ = "0.1.0"
