"""Single runs that load data and a model, train or transform it, and write a run folder (QAT, DeFakeQ, pruning,
distillation, the MobileNetV3 recipe, the demo, scanning). They sit above quant/compress/deploy and below
studies/serve/commands (../shared/DESIGN.md §1)."""
