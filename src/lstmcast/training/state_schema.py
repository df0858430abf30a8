"""The types a checkpoint's state.json must hold (FAULTS T12).

A re-hashed state.json with ``"lr": "x"`` used to load, restore, and crash the first optimizer step
(exit 1). Everything that restore() hands to the optimizer, the scheduler, early stopping, the epoch
cursor and the history is checked here with strict types; losses may be inf (no best yet), learning
rates and optimizer constants must be finite. Unknown keys pass: another optimizer or scheduler of
the same format version may add some, and restore() refuses what does not fit.

>>> state_problems({"optimizer": {"param_groups": [{"lr": "x", "params": [0]}]}})[3]
"optimizer.param_groups.0.lr: input should be a valid number, got 'x'"
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from lstmcast.run.meta import schema_problems

Count = Annotated[int, Field(ge=0)]
Loss = Annotated[float, Field(allow_inf_nan=True)]  # inf before the first validation, nan on divergence
Rate = Annotated[float, Field(ge=0)]  # finite: the model config forbids inf/nan


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, populate_by_name=True)


class _ParamGroup(_Strict):
    lr: Rate
    betas: Annotated[list[Rate], Field(min_length=2, max_length=2)] | None = None
    eps: Rate | None = None
    weight_decay: Rate | None = None
    amsgrad: bool | None = None
    maximize: bool | None = None
    foreach: bool | None = None
    fused: bool | None = None
    params: list[Count]


class _Optimizer(_Strict):
    param_groups: list[_ParamGroup] = Field(min_length=1)


class _Scheduler(_Strict):
    """ReduceLROnPlateau's state_dict; its fields are optional so another scheduler can be checkpointed."""

    factor: Rate | None = None
    min_lrs: list[Rate] | None = None
    patience: Count | None = None
    cooldown: Count | None = None
    cooldown_counter: Count | None = None
    num_bad_epochs: Count | None = None
    last_epoch: int | None = None
    last_lr: list[Rate] | None = Field(default=None, alias="_last_lr")
    best: Loss | None = None
    mode: str | None = None
    threshold: Rate | None = None
    threshold_mode: str | None = None


class _EarlyStopping(_Strict):
    best_epoch: Count
    best_val_loss: Loss
    bad_epochs: Count
    has_best: bool


class _Cursor(_Strict):
    gen_state: str
    pos: Count
    checked_pos: Count
    checked_skipped: Count
    checked_norm_sum: Loss
    seconds: Loss


class _Epoch(_Strict):
    epoch: Count
    train_loss: Loss
    val_loss: Loss
    lr: Rate
    steps: Count


class CheckpointState(_Strict):
    step: Count
    epoch: Count
    finished: bool
    note: str = ""
    stop_reason: str = ""
    precision: str | None = None
    optimizer: _Optimizer
    scheduler: _Scheduler
    early_stopping: _EarlyStopping
    cursor: _Cursor | None = None
    history: list[_Epoch]


def state_problems(meta: dict[str, Any]) -> list[str]:
    """What is wrong with a state.json mapping, one line per problem (at most 5), or []."""
    return schema_problems(CheckpointState, meta, limit=5)
