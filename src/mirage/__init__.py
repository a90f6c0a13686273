"""mirage: safety fine-tuning, unlearning and one-word attacks for vision-language models."""

__version__ = "0.1.0"
