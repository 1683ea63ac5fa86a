"""Teacher -> student knowledge distillation on a distilled set: [`KDConfig`] + [`KDTrainer`].

A distilled set holds a handful of examples per class. A student trained on it with the hard labels alone sees very
little signal; a teacher (any classifier of the set's inputs, typically one trained on the full real training split)
labels every augmented view of those examples with a full distribution over the classes, which carries far more
information (Hinton et al., 2015; the soft-label results of SRe2L, RDED and Qin et al., 2024 on distilled sets).
Images and text share the loop; the modality says which Auto class the teacher and student are, what is saved beside
the student (an image processor, a tokenizer) and how a student is bound to the set's inputs (text: the encoder's
word-embedding table).

```python
>>> from hf_distill.kd import KDConfig, train_student
>>> config = KDConfig(distilled_dataset="outputs/mnist-dm-ipc10", train_teacher=True, output_dir="outputs/student")
>>> trainer = train_student(config)       # trains the teacher on real MNIST, then the student on the distilled set
>>> trainer.eval_results["accuracy"]      # percent, on the whole real test split
```

Modules: `config` ([`KDConfig`]), `data` (the distilled set, the real test split, the collator), `losses` (the loss
and its target), `metrics` (accuracy), `teacher` (loading any teacher; an image ConvNet teacher), `text_teacher` (a
text teacher: the set's encoder fine-tuned), `student`, `trainer` ([`KDTrainer`] and its output folder) and `api`
([`train_student`]).
"""

# `X as X`: importable from `hf_distill.kd` as before the split, but outside `__all__`.
from ..modalities.image import build_image_processor
from ..modeling import load_teacher
from .api import TEACHER_DIR as TEACHER_DIR
from .api import train_student
from .config import SOFT_LABEL_CHOICES as SOFT_LABEL_CHOICES
from .config import KDConfig
from .data import DistilledSet, KDDataCollator, load_distilled_set, prepare_test_split
from .losses import distillation_loss, kd_target_probabilities
from .metrics import METRICS_DIR as METRICS_DIR
from .metrics import load_accuracy_metric
from .student import build_student
from .teacher import describe_teacher as describe_teacher
from .teacher import train_teacher
from .text_teacher import train_text_teacher
from .trainer import EVAL_RESULTS_NAME as EVAL_RESULTS_NAME
from .trainer import KD_CONFIG_NAME as KD_CONFIG_NAME
from .trainer import KDTrainer

__all__ = [
    "DistilledSet",
    "KDConfig",
    "KDDataCollator",
    "KDTrainer",
    "build_image_processor",
    "build_student",
    "distillation_loss",
    "kd_target_probabilities",
    "load_accuracy_metric",
    "load_distilled_set",
    "load_teacher",
    "prepare_test_split",
    "train_student",
    "train_teacher",
    "train_text_teacher",
]
