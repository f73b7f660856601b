"""Staged pretraining of the micro base, resumable exactly, on the generated corpus.

    trimpi pretrain micro-base --out DIR [--hours H]     (rerun the same command to continue)

Stages (`options.STAGES`), each gated by a measured number (`gates`): the eye learns to see from
scene graphs; the language model learns to say what it sees; then to follow policies in context,
to call tools and to answer general questions; a short joint pass ends it. See `run` for the
run directory's layout.
"""

from trimpi.train.pretrain.options import (
    STAGES,
    Architecture,
    PretrainOptions,
    Stage,
    compute_dtype,
    cpu_has_fast_bf16,
    options_dict,
    with_stage_steps,
)
from trimpi.train.pretrain.run import (
    export_run,
    options_from_run,
    pack_finished,
    prepare_corpus,
    run_pretrain,
    run_progress,
    stage_folder,
)
from trimpi.train.pretrain.trainer import (
    StageTrainer,
    build_model,
    corpus_config,
    item_chars,
    load_state,
    micro_batches,
)

__all__ = ["STAGES", "Architecture", "PretrainOptions", "Stage", "StageTrainer", "build_model", "compute_dtype",
           "corpus_config", "cpu_has_fast_bf16", "export_run", "item_chars", "load_state", "micro_batches",
           "options_dict", "options_from_run", "pack_finished", "prepare_corpus", "run_pretrain", "run_progress",
           "stage_folder", "with_stage_steps"]
