from .apa_config import APAConfig
from .apa_trainer import APAEventReport, APATrainer
from .rec_config import RecConfig
from .rec_trainer import RecTrainer, compute_utility_metrics, default_target_modules, make_lora_config
from .sisa_config import SISAConfig
from .sisa_trainer import SISATrainer


__all__ = [
    "APAConfig",
    "APAEventReport",
    "APATrainer",
    "RecConfig",
    "RecTrainer",
    "SISAConfig",
    "SISATrainer",
    "compute_utility_metrics",
    "default_target_modules",
    "make_lora_config",
]
