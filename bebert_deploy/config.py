"""Explicit run configuration, serialised to JSON inside every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bebert_deploy.models.bert import QuantConfig


@dataclass
class BoostConfig:
    """How BEBERT's AdaBoost runs (see bebert_deploy.training.adaboost).

    alpha: 'samme' (ln((1-e)/e) + ln(K-1), renormalised weights) or 'paper' (0.5 ln((1-e)/e)).
    weighting: 'loss' (sample weights scale the loss) or 'resample' (weighted draw with replacement per epoch).
    vote: 'soft' (sum alpha_i softmax_i) or 'hard' (alpha-weighted majority vote).
    warm_start: each member starts from the previous member's weights (official code) instead of the
    common binary initialisation.
    """

    members: int = 2
    alpha: str = "samme"
    weighting: str = "loss"
    vote: str = "soft"
    warm_start: bool = False

    @classmethod
    def paper(cls, members: int = 2) -> "BoostConfig":
        """The official BEBERT code's setting."""
        return cls(members=members, alpha="paper", weighting="resample", vote="hard", warm_start=True)


@dataclass
class TrainConfig:
    """Everything `bebert-deploy train` needs. Defaults: the whole training set, the recipe of issue 16
    (independent members, prediction KD + a hard-label term, distilled half-width start, teacher-labelled extra
    text); `quickstart` and the tests shrink the budget.

    ensemble: 'independent' (each member its own seed, data order / bootstrap sample and ternary->TWS run;
    equal-weight soft vote) or 'boost' (AdaBoost over members sharing one ternary run; see BoostConfig).
    extra_text: teacher-labelled sentences beyond the task's training set ('none', or names from
    bebert_deploy.data.extra_text, comma-separated), deduplicated against every dev/test split.
    half_distill_epochs: prediction-KD epochs of the pruned half-width full-precision model before ternarizing.
    hard_weight: weight of the hard-label loss added to prediction KD on labelled rows.
    tws_tied: skip the split and keep training the ternary model as the member: a TWS slot whose two binary halves
    share one input quantizer and one scale is exactly ternary alpha * (s0 + s1), so every slot exports as one
    GEMM (the speed issue's tied TWS); untied halves (the default) each learn their own scale and step.
    share_embedding: members after the first take the first member's trained word table and keep it frozen, so
    the exported ensemble stores one table (the word table is half of a binary MiniLM member's bytes).
    device: 'auto' (CUDA when available), 'cpu' or 'cuda'.
    quant: the members' quantization. By default both halves of a TWS slot share one input quantizer and keep
    their own scales (7-13% faster members; over three seeds with the same teachers no accuracy cost beyond
    run-to-run noise); without TWS there are no halves and that switch does nothing.
    """

    task: str = "rotten-tomatoes"
    data_dir: str | None = None          # folder with train.tsv/dev.tsv; None = the fetched dataset
    base: str | None = None              # BERT folder; None = the built-in all-MiniLM-L6-v2
    teacher: str | None = None           # existing checkpoint whose full-precision teacher is reused
    max_len: int = 64
    train_limit: int | None = None
    dev_limit: int | None = None
    batch_size: int = 32
    teacher_epochs: int = 3
    teacher_lr: float = 5e-5
    half_distill_epochs: int = 1
    ternary_epochs: int = 2
    member_epochs: int = 2
    lr: float = 5e-4
    step_lr: float = 1e-3                # LSQ steps (BinaryBERT: clip_lr 1e-4 over far more steps)
    weight_decay: float = 0.01
    warmup: float = 0.1
    kd: str = "pred"                     # none | pred | two_stage
    hard_weight: float = 0.5
    tws: bool = True
    tws_tied: bool = False               # members stay ternary: TWS halves with one quantizer and one scale
    share_embedding: bool = False        # members after the first reuse the first member's word table, frozen
    width: float = 0.5
    seed: int = 42
    ensemble: str = "independent"        # independent | boost
    bootstrap: bool = False              # independent members: each trains on its own bootstrap sample
    extra_text: str = "none"
    augment: int = 0                     # teacher-labelled perturbed copies of each training sentence
    device: str = "auto"
    # the recipe's members: BinaryBERT's W1-E1-A4 with both TWS halves of a slot reading one input quantizer
    # (QuantConfig.tws_shared_act; QuantConfig's own default stays False for checkpoints written before it existed)
    quant: QuantConfig = field(default_factory=lambda: QuantConfig(tws_shared_act=True))
    boost: BoostConfig = field(default_factory=BoostConfig)

    def to_dict(self) -> dict:
        return asdict(self)
