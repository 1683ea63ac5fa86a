"""Names every module shares: files and folders a run writes, the offline demo source, the package version.

A leaf module: it imports nothing of this package, so any module may import it.
"""

__version__ = "0.1.0.dev0"

#: The builtin offline demo dataset (scikit-learn's bundled 8x8 handwritten digits).
DIGITS_SOURCE = "sklearn:digits"

# What `DistillTrainer.save` writes into an output folder.
CONFIG_NAME = "distill_config.json"
DATASET_DIR = "dataset"
EVAL_RESULTS_NAME = "eval_results.json"
#: A cross-architecture table kept beside the recorded results (`hf-distill evaluate --architectures ...
#: --results_name`); the card reads it when `eval_results.json` holds no table of its own.
CROSS_ARCHITECTURE_RESULTS_NAME = "eval_results_cross_architecture.json"
GRID_NAME = "synthetic_grid.png"
#: The ZCA whitening a set's inputs live in (written only by runs with `zca: true`).
ZCA_NAME = "zca.safetensors"
#: Every row's score under a scored coreset (forgetting, el2n, grand), written beside its set.
SELECTION_SCORES_NAME = "selection_scores.safetensors"

# What a checkpoint folder holds.
SYNTHETIC_NAME = "synthetic.safetensors"
METHOD_STATE_NAME = "method_state.safetensors"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
OPTIMIZER_META_NAME = "optimizer.json"

# Expert trajectories (MTT, DM's network pool).
EXPERTS_INDEX_NAME = "experts.json"

# A student trained with knowledge distillation.
KD_CONFIG_NAME = "kd_config.json"
TEACHER_DIR = "teacher"

#: What a method may write beside its set (`DistillationMethod.save_artifacts`): a save removes those another run
#: left and this one did not write, so that they are never read as this set's (e.g. a stale `teacher/`).
METHOD_ARTIFACT_NAMES = (SELECTION_SCORES_NAME, TEACHER_DIR)

#: The column of learned soft labels (probabilities) in an exported distilled set.
SOFT_LABEL_COLUMN = "soft_label"
#: The column of learned real-valued regression targets in an exported distilled set.
REGRESSION_TARGET_COLUMN = "regression_target"

#: Values of `mixed_precision`: float32, bfloat16 autocast, or bfloat16 only where the device computes it natively.
MIXED_PRECISIONS = ("no", "bf16", "auto")
