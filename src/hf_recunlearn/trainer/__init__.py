from .rec_config import RecConfig
from .rec_trainer import RecTrainer, compute_utility_metrics, default_target_modules, make_lora_config


__all__ = ["RecConfig", "RecTrainer", "compute_utility_metrics", "default_target_modules", "make_lora_config"]
