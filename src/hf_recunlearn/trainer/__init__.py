from .apa_config import APAConfig
from .apa_trainer import APAEventReport, APATrainer
from .bad_teacher_config import BadTeacherConfig
from .bad_teacher_trainer import BadTeacherTrainer
from .base_config import UnlearningConfig
from .base_trainer import StudentOutputs, UnlearningCollator, UnlearningTrainer, compute_unlearning_metrics
from .e2urec_config import E2URecConfig
from .e2urec_trainer import E2URecTrainer
from .neggrad_config import NegGradConfig
from .neggrad_trainer import NegGradTrainer
from .negkl_config import NegKLConfig
from .negkl_trainer import NegKLTrainer
from .rec_config import RecConfig
from .rec_trainer import RecTrainer, compute_utility_metrics, default_target_modules, make_lora_config
from .retrain import retrain_reference
from .sisa_config import SISAConfig
from .sisa_trainer import SISATrainer
from .stopping import AuditRecord, AuditStoppingCallback


# The approximate unlearning methods by the name the CLI and the benchmarks use: (trainer class, config class).
APPROXIMATE_METHODS = {
    "e2urec": (E2URecTrainer, E2URecConfig),
    "neggrad": (NegGradTrainer, NegGradConfig),
    "negkl": (NegKLTrainer, NegKLConfig),
    "badt": (BadTeacherTrainer, BadTeacherConfig),
}

__all__ = [
    "APPROXIMATE_METHODS",
    "APAConfig",
    "APAEventReport",
    "APATrainer",
    "AuditRecord",
    "AuditStoppingCallback",
    "BadTeacherConfig",
    "BadTeacherTrainer",
    "E2URecConfig",
    "E2URecTrainer",
    "NegGradConfig",
    "NegGradTrainer",
    "NegKLConfig",
    "NegKLTrainer",
    "RecConfig",
    "RecTrainer",
    "SISAConfig",
    "SISATrainer",
    "StudentOutputs",
    "UnlearningCollator",
    "UnlearningConfig",
    "UnlearningTrainer",
    "compute_unlearning_metrics",
    "compute_utility_metrics",
    "default_target_modules",
    "make_lora_config",
    "retrain_reference",
]
