"""What a micro-base pretraining run is made of: the architecture, the stages and the run's options."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trimpi.errors import ConfigError
from trimpi.models.tiny import ConvEye, TinySize

# Which parameters a stage trains.
TRAINS = ("vision", "language", "all")
# What a stage's gate measures (trimpi.train.pretrain.gates), and the number it compares.
GATES = {"head_perception": "single", "lm_perception": "gap", "in_context": "accuracy"}


@dataclass
class Architecture:
    """The micro base's architecture: an eye → projector → a small text model with a byte-level BPE of
    `vocab` tokens.

    family "fast_vlm": a ConvNeXt eye at eye_width × eye_height (one image token per cell of its last
    stage), an MLP projector and a Qwen2 text model (HF engine only: vLLM has no FastVLM).
    family "idefics3": a SigLIP eye at image_size (squared), pixel shuffle by scale_factor, a Llama
    text model: (image_size / patch_size / scale_factor)² image tokens; runs on vLLM too."""

    family: str = "idefics3"  # measured against fast_vlm at equal CPU: benchmarks/eye_compare.py
    eye_width: int = 160
    eye_height: int = 128
    eye_widths: tuple[int, ...] = (32, 64, 128, 256)
    eye_depths: tuple[int, ...] = (1, 1, 1, 1)
    image_size: int = 112
    patch_size: int = 14
    scale_factor: int = 2
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 8
    intermediate: int = 768
    vocab: int = 4096

    @property
    def eye(self) -> ConvEye:
        return ConvEye(width=self.eye_width, height=self.eye_height, widths=tuple(self.eye_widths),
                       depths=tuple(self.eye_depths), kind="convnext")

    @property
    def text(self) -> TinySize:
        return TinySize(hidden=self.hidden, layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
                        intermediate=self.intermediate, vocab=self.vocab, vision_hidden=self.vision_hidden,
                        vision_layers=self.vision_layers, vision_heads=self.vision_heads, image_size=self.image_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(columns, rows) of image tokens, in the order the eye emits them (row-major)."""
        if self.family == "fast_vlm":
            return self.eye.grid
        side = self.image_size // self.patch_size // self.scale_factor
        return side, side

    @property
    def image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def check(self) -> None:
        if self.family not in ("fast_vlm", "idefics3"):
            raise ConfigError(f"family {self.family!r}: expected fast_vlm or idefics3")
        if self.hidden % self.heads:
            raise ConfigError(f"text tower: hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.family == "idefics3":
            if self.vision_hidden % self.vision_heads:
                raise ConfigError(f"vision tower: hidden {self.vision_hidden} is not a multiple of heads "
                                  f"{self.vision_heads}")
            if self.image_size % (self.patch_size * self.scale_factor):
                raise ConfigError(f"image_size {self.image_size} must be a multiple of patch_size × scale_factor "
                                  f"({self.patch_size * self.scale_factor})")
            return
        try:
            self.eye.check()
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclass
class Stage:
    """One stage of the recipe: what it trains, on which corpus mix, for how long, and its gate.

    mix: corpus item kinds and weights (trimpi.data.pretrain.corpus.MIX); lm_weight / perception_weight:
    the language loss on the assistant turn and the perception loss (existence, dense cells, counts)
    on the scene image; gate: what is measured at the end and must reach `target` before the next stage."""

    name: str
    steps: int
    trains: str
    mix: dict[str, float]
    lr: float
    batch_size: int = 16
    lm_weight: float = 1.0
    perception_weight: float = 0.0
    sizes: tuple[tuple[int, int], ...] = ((160, 120), (224, 168), (320, 240))
    gate: str | None = None
    target: float = 0.0

    def check(self) -> None:
        if self.trains not in TRAINS:
            raise ConfigError(f"stage {self.name}: trains {self.trains!r}, expected one of {', '.join(TRAINS)}")
        if self.steps < 0 or self.batch_size < 1:
            raise ConfigError(f"stage {self.name}: steps must be >= 0 and batch_size >= 1")
        if self.gate is not None and self.gate not in GATES:
            raise ConfigError(f"stage {self.name}: gate {self.gate!r}, expected one of {', '.join(GATES)}")
        if self.lm_weight <= 0 and self.perception_weight <= 0:
            raise ConfigError(f"stage {self.name}: no loss (lm_weight and perception_weight are both 0)")


PERCEPTION_MIX = {"exist": 0.55, "count": 0.15, "object": 0.2, "caption": 0.1}
FOLLOW_MIX = {"policy": 0.5, "override": 0.08, "tools": 0.12, "general": 0.12, "exist": 0.12, "object": 0.06}
ALL_MIX = {"exist": 0.2, "count": 0.05, "object": 0.1, "caption": 0.05, "general": 0.1, "policy": 0.35,
           "override": 0.05, "tools": 0.1}

# The shipped recipe. (a) the eye learns to see from scene graphs alone; (b) with the eye frozen, the
# projector and language model learn to say what it sees; (c) then to follow policies in context, to
# call tools and to answer general questions; (d) a short pass over everything, the eye included.
SMALL_SIZES = ((160, 120), (224, 168))
STAGES = (
    Stage("vision", steps=2000, trains="vision", mix={"exist": 1.0}, lr=1.5e-3, batch_size=32, lm_weight=0.0,
          perception_weight=1.0, sizes=((160, 120),), gate="head_perception", target=0.97),
    Stage("ground", steps=600, trains="language", mix=PERCEPTION_MIX, lr=1e-3, batch_size=32, sizes=SMALL_SIZES,
          gate="lm_perception", target=0.02),
    Stage("follow", steps=800, trains="language", mix=FOLLOW_MIX, lr=1e-3, batch_size=16, sizes=SMALL_SIZES,
          gate="in_context", target=0.8),
    Stage("joint", steps=200, trains="all", mix=ALL_MIX, lr=2e-4, batch_size=16, perception_weight=0.5,
          sizes=SMALL_SIZES, gate="in_context", target=0.8),
)


@dataclass
class PretrainOptions:
    """Options of `trimpi pretrain micro-base` (defaults: the shipped base's recipe)."""

    out: str
    arch: Architecture = field(default_factory=Architecture)
    stages: tuple[Stage, ...] = STAGES
    seed: int = 0
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_batch_chars: int = 12_000  # padded characters per micro-batch (≈ 3k tokens); a step may take several
    shard_size: int = 512
    depths: tuple[int, ...] = (2, 4)  # policy depths in context (trimpi.data.pretrain.corpus.DEPTHS)
    data_workers: int = 1  # processes writing the next shards while the model trains (0: none)
    exclude: tuple[str, ...] = ()
    tokenizer_policies: int = 300
    heldout_images: int = 1000  # held-out scenes for the eye's gate
    lm_heldout_images: int = 200  # of those, asked every yes/no question for the language model's gate
    heldout_policies: int = 100  # never-seen depth-2 policies (T and M) for the in-context gate
    force: bool = False  # go on past a missed gate (the card records it)
    hours: float | None = None
    save_minutes: float = 10.0
    save_steps: int = 0
    stop_after: int | None = None  # steps in this run (tests and smoke runs); None: until done or `hours`
    dtype: str = "auto"
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        self.arch.check()
        names = [s.name for s in self.stages]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"stages: expected distinct names, got {names}")
        for stage in self.stages:
            stage.check()


# Options that may change between chunks of one run (they do not change what is trained).
RUN_CONTROLS = ("out", "hours", "save_minutes", "save_steps", "stop_after", "progress", "device", "data_workers",
                "force")


def options_dict(opts: PretrainOptions) -> dict:
    """The options as JSON values (tuples become lists), as the checkpoint stores them."""
    return json.loads(json.dumps(dataclasses.asdict(opts)))


def options_from_dict(saved: dict) -> PretrainOptions:
    """PretrainOptions from `options_dict` output."""
    saved = dict(saved)
    saved["arch"] = Architecture(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["arch"].items()})
    saved["stages"] = tuple(Stage(**{**s, "sizes": tuple(tuple(x) for x in s["sizes"])}) for s in saved["stages"])
    saved["exclude"] = tuple(saved["exclude"])
    saved["depths"] = tuple(saved["depths"])
    return PretrainOptions(**saved)


def with_stage_steps(stages: tuple[Stage, ...], steps: dict[str, int]) -> tuple[Stage, ...]:
    """The stages with some step counts replaced (`--steps vision=2000`)."""
    unknown = set(steps) - {s.name for s in stages}
    if unknown:
        raise ConfigError(f"--steps: unknown stage {min(unknown)!r}; stages are "
                          f"{', '.join(s.name for s in stages)}")
    return tuple(dataclasses.replace(s, steps=steps.get(s.name, s.steps)) for s in stages)


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX or AVX512-BF16 (bf16 matmul ~4× fp32 there; ~300× slower on AVX2 only)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def compute_dtype(choice: str, device: torch.device) -> str:
    """'bfloat16' (autocast) or 'float32' for the run; "auto" picks by the device's measured capability."""
    if choice in ("float32", "bfloat16"):
        return choice
    if choice != "auto":
        raise ConfigError(f"--dtype: expected auto, float32 or bfloat16, got {choice!r}")
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def schedule(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
