"""DeFakeQ, model → model: HAQ mixed-precision allocation, VEFT channel choice and progressive contrastive
calibration of a quantized student. One algorithm per file:

- `cka.py`: linear CKA and each layer's redundancy ρ_l;
- `sensitivity.py`: S_l(b) ("taylor", "measured", "hawq") and the layer-capture tools;
- `allocate.py`: `HAQScores` and the exact multiple-choice knapsack (storage and/or BOPs budget);
- `haq.py`: `measure_haq` (everything the allocator needs, exact packed bytes per layer), its record and chart;
- `student.py`: the quantized student of an allocation (`build_student`);
- `veft_channels.py`: which output channels VEFT keeps at 8 bits (the mechanism is `quant/veft.py`);
- `calibrate.py`: progressive contrastive calibration (SupCon + stage-wise feature alignment + KD).

The end-to-end run (load, calibration data, the steps above, a run folder) is `fakelite.pipelines.defakeq`;
the comparison with PTQ baselines is `fakelite.studies.defakeq_compare`. See docs/defakeq.md.
"""

from .allocate import MB, HAQScores, InfeasibleBudget, allocate, brute_force_mckp, solve_mckp
from .calibrate import CalibConfig, TeacherCache, calibrate_defakeq, supcon_loss
from .cka import linear_cka
from .haq import (
    DEFAULT_BITS,
    DEFAULT_VEFT_RATIO,
    haq_record,
    haq_scores,
    measure_costs,
    measure_haq,
    plot_allocation,
)
from .student import base_config, build_quantized, build_student, mixed_config, uniform_alloc
from .veft_channels import choose_veft_channels

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_VEFT_RATIO",
    "MB",
    "CalibConfig",
    "HAQScores",
    "InfeasibleBudget",
    "TeacherCache",
    "allocate",
    "base_config",
    "brute_force_mckp",
    "build_quantized",
    "build_student",
    "calibrate_defakeq",
    "choose_veft_channels",
    "haq_record",
    "haq_scores",
    "linear_cka",
    "measure_costs",
    "measure_haq",
    "mixed_config",
    "plot_allocation",
    "solve_mckp",
    "supcon_loss",
    "uniform_alloc",
]
