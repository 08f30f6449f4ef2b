"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT."""

__version__ = "0.1.0.dev0"
