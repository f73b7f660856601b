"""Vision pre-training from scene graphs: a fresh vision tower learns to see before any captioning.

A language model trained together with a random vision tower learns the caption grammar long
before the image tokens carry anything, and then writes the likeliest caption for every image.
This stage trains the vision tower and connector alone, with a direct signal: a temporary
linear head scores every image token for every *existence label* — one attribute value ("a
cyan object") or a pair of values of two attribute types ("a cyan cube") — and an image's
score for a label is the maximum over its tokens (multiple-instance learning: some region
shows it). The target comes from the scene graph: does any object match? The head is thrown
away; what stays is image tokens from which "is there a ...?" can be read off, which is what
policy conditions ask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from trimpi.data.clevr.existence import (
    Label,
    existence_labels,
    existence_targets,
    label_balanced_accuracies,
    mean_defined,
)
from trimpi.data.clevr.tree import ATTRIBUTE_VALUES, walk
from trimpi.errors import ModelError

KINDS = tuple(ATTRIBUTE_VALUES)  # attribute kinds, in the order of the single-value labels


def label_prior(targets: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """[n_labels]: each label's frequency over the rows of targets [n, n_labels], kept inside (eps, 1 - eps)."""
    return targets.float().mean(0).clamp(eps, 1 - eps)


def balanced_bce(scores: torch.Tensor, targets: torch.Tensor, prior: torch.Tensor,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy in which each label's positives and negatives weigh half each.

    scores, targets: [..., n_labels]; prior: [n_labels], the labels' positive frequency p (weights
    0.5/p for positives, 0.5/(1-p) for negatives); keep: optional 0/1 mask of the same shape as
    scores (0: the entry takes no part). Plain BCE on labels present in most scenes learns the prior
    and answers "present" for all of them; this one cannot gain by it."""
    weight = targets * (0.5 / prior) + (1 - targets) * (0.5 / (1 - prior))
    if keep is not None:
        weight = weight * keep
    loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets, weight=weight, reduction="sum")
    return loss / (keep.sum().clamp(min=1) if keep is not None else targets.numel())


def cell_of(obj: dict, image_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Index (row-major) of the image-token cell that holds the object's centre (`pixel_coords`)."""
    (width, height), (cols, rows) = image_size, grid
    col = min(max(int(obj["pixel_coords"][0] * cols / width), 0), cols - 1)
    row = min(max(int(obj["pixel_coords"][1] * rows / height), 0), rows - 1)
    return row * cols + col


@functools.cache
def _object_labels(attributes: tuple[tuple[str, str], ...], labels: tuple) -> torch.Tensor:
    """[n_labels] 0/1: the labels one object with these attribute values matches."""
    return torch.tensor(existence_targets([dict(attributes)], labels))


def object_label_rows(objects: Sequence[dict], labels: Sequence[Label]) -> torch.Tensor:
    """[n_objects, n_labels] 0/1: the labels each object matches (an image's targets are their maximum)."""
    key = tuple(labels)
    rows = [_object_labels(tuple((a, o[a]) for a in ATTRIBUTE_VALUES), key) for o in objects]
    return torch.stack(rows) if rows else torch.zeros(0, len(labels))


def cell_targets(objects: Sequence[dict], labels: Sequence[Label], image_size: tuple[int, int],
                 grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense targets of one image: (labels [cells, n_labels], keep [cells, n_labels], counts [cells]).

    A cell is positive for a label when an object matching it has its centre there; a negative
    cell next to a positive one (3×3 neighbourhood) is left out (`keep` 0), since an object spills
    over its centre cell. counts: objects centred in each cell."""
    cols, rows = grid
    target = torch.zeros(rows * cols, len(labels))
    counts = torch.zeros(rows * cols)
    for obj, matches in zip(objects, object_label_rows(objects, labels), strict=True):
        cell = cell_of(obj, image_size, grid)
        counts[cell] += 1
        target[cell] = torch.maximum(target[cell], matches)
    grid_view = target.reshape(rows, cols, len(labels))
    padded = torch.nn.functional.pad(grid_view, (0, 0, 1, 1, 1, 1))
    near = torch.stack([padded[dy:dy + rows, dx:dx + cols] for dy in range(3) for dx in range(3)]).amax(0)
    keep = 1 - (near.reshape(rows * cols, len(labels)) - target)
    return target, keep, counts


class PerceptionHead(torch.nn.Module):
    """Per image token: a score for every existence label and an object-count rate (thrown away after
    pretraining; what stays is image tokens from which both can be read off linearly)."""

    def __init__(self, dim: int, n_labels: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim, n_labels + 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, T, dim] → (label scores [B, T, n_labels], count rates [B, T] (>= 0))."""
        out = self.linear(features)
        return out[..., :-1], torch.nn.functional.softplus(out[..., -1])


def perception_loss(cell_scores: torch.Tensor, count_rates: torch.Tensor, targets: torch.Tensor,
                    cells: torch.Tensor, keep: torch.Tensor, counts: torch.Tensor, prior: torch.Tensor,
                    dense_weight: float = 1.0, count_weight: float = 0.2) -> dict[str, torch.Tensor]:
    """The vision objective: {"existence", "dense", "count", "total"}.

    existence: prior-balanced BCE of the image scores (max over tokens) against the scene's labels;
    dense: prior-balanced BCE of every token's scores against its cell's labels (neighbours of a
    positive cell left out); count: Poisson NLL of each cell's count rate. Shapes: cell_scores,
    cells, keep [B, T, L]; count_rates, counts [B, T]; targets [B, L]; prior [L] (image level)."""
    existence = balanced_bce(cell_scores.amax(1), targets, prior)
    cell_prior = label_prior(cells.flatten(0, 1), eps=1e-3)
    dense = balanced_bce(cell_scores, cells, cell_prior, keep)
    count = torch.nn.functional.poisson_nll_loss(count_rates, counts, log_input=False)
    total = existence + dense_weight * dense + count_weight * count
    return {"existence": existence, "dense": dense, "count": count, "total": total}


def auc(scores: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Per label (column): the area under the ROC curve (ties counted half); NaN with one class only."""
    out = []
    for k in range(truth.shape[1]):
        t, s = truth[:, k].bool(), scores[:, k].double()
        n_pos, n_neg = int(t.sum()), int((~t).sum())
        if not n_pos or not n_neg:
            out.append(math.nan)
            continue
        greater = (s[t][:, None] > s[~t][None, :]).double().sum()
        ties = (s[t][:, None] == s[~t][None, :]).double().sum()
        out.append(float((greater + 0.5 * ties) / (n_pos * n_neg)))
    return out


def perception_metrics(scores: torch.Tensor, targets: torch.Tensor, labels: Sequence[Label]) -> dict[str, float]:
    """Balanced accuracy at the decision threshold (score > 0) and AUC: over single values, over value
    pairs, and per attribute kind (single values); plus the weakest single value. scores, targets:
    [n_images, n_labels]."""
    truth = targets > 0.5
    accuracy = label_balanced_accuracies((scores > 0).tolist(), truth.tolist())
    areas = auc(scores, truth)
    single = [k for k, label in enumerate(labels) if len(label) == 1]
    pair = [k for k, label in enumerate(labels) if len(label) == 2]
    out = {"single": mean_defined([accuracy[k] for k in single]), "pair": mean_defined([accuracy[k] for k in pair]),
           "single_auc": mean_defined([areas[k] for k in single]), "pair_auc": mean_defined([areas[k] for k in pair]),
           "images": len(targets)}
    for kind in KINDS:
        ks = [k for k in single if labels[k][0][0] == kind]
        out[kind] = mean_defined([accuracy[k] for k in ks])
        out[f"{kind}_auc"] = mean_defined([areas[k] for k in ks])
    weakest = min((k for k in single if not math.isnan(accuracy[k])), key=lambda k: accuracy[k], default=None)
    if weakest is not None:
        out["weakest"] = f"{labels[weakest][0][0]}={labels[weakest][0][1]}: {accuracy[weakest]:.3f}"
    return out


def balanced_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over labels of their balanced accuracy (labels with both classes only); scores,
    targets: [n_images, n_labels], a score > 0 predicts "present"."""
    return mean_defined(label_balanced_accuracies((scores > 0).tolist(), (targets > 0.5).tolist()))


class _Unscored(Exception):
    """A condition the probe has no label for (a conjunction of more than two attribute types)."""


def probe_policy_accuracy(scores: torch.Tensor, trees: Sequence[dict], answers: Sequence[str],
                          labels: Sequence[Label]) -> dict[str, float]:
    """Policy accuracy when every condition is answered by the probe (score > 0: present).

    This is what a reader of the image tokens that is exactly as good as the linear probe would
    score, so it bounds what later stages can reach without better perception. scores:
    [n_records, n_labels]. Records whose path meets a conjunction without a label are left out
    and `probe_policy_records` says how many were scored."""
    index = {tuple(sorted(label)): k for k, label in enumerate(labels)}
    hits = scored = 0
    for row, tree, answer in zip(scores, trees, answers, strict=True):
        def present(conj, row=row):
            k = index.get(tuple(sorted(conj.items())))
            if k is None:
                raise _Unscored
            return row[k].item() > 0

        try:
            leaf = walk(tree, present)[1]
        except _Unscored:
            continue
        scored += 1
        hits += leaf == answer
    return {"probe_policy_accuracy": hits / scored if scored else float("nan"), "probe_policy_records": scored}


def image_token_features(model, image_inputs: dict) -> torch.Tensor:
    """[n_images, n_tokens, dim]: the vision tower + connector outputs that replace the image tokens."""
    out = model.get_image_features(**image_inputs)
    feats = getattr(out, "pooler_output", out)
    if isinstance(feats, (list, tuple)):
        return torch.stack(list(feats))
    if isinstance(feats, torch.Tensor) and feats.dim() == 3:
        return feats
    raise ModelError(f"{type(model).__name__}: get_image_features gave no per-image token features")


def image_inputs(processor, images: list) -> dict:
    """Image-processor tensors for one image per sample."""
    return dict(processor.image_processor([[im] for im in images], return_tensors="pt"))


def is_vision_parameter(name: str) -> bool:
    """Vision tower or vision→text connector parameter (Idefics3, LLaVA and Qwen-VL naming)."""
    return any(part in name for part in ("vision_model", "vision_tower", "connector", "multi_modal_projector",
                                         "visual"))


def vision_parameters(model) -> list[torch.nn.Parameter]:
    """Parameters that image_token_features depends on (vision tower and connector)."""
    return [p for n, p in model.named_parameters() if is_vision_parameter(n)]


@torch.no_grad()
def probe_scores(model, processor, head: torch.nn.Module, images: list, batch_size: int = 64) -> torch.Tensor:
    """[n_images, n_labels]: the probe's image-level label scores (max over image tokens)."""
    return torch.cat([head(image_token_features(model, image_inputs(processor, images[i:i + batch_size]))).amax(1)
                      for i in range(0, len(images), batch_size)])


def pretrain_vision(model, processor, train_images: list, train_objects: list[list[dict]], eval_images: list,
                    eval_objects: list[list[dict]], steps: int, lr: float = 1e-3, batch_size: int = 32,
                    seed: int = 0, progress: bool = True, policy_eval: Sequence[tuple] = ()) -> dict[str, float]:
    """Train vision tower + connector on existence labels for `steps` steps; returns held-out scores.

    images: PIL images; objects: each image's scene-graph objects; policy_eval: (index into
    eval_images, policy tree, answer) triples for `probe_policy_accuracy`. The text tower is untouched."""
    from tqdm.auto import tqdm

    labels = existence_labels()
    n_single = sum(len(v) for v in ATTRIBUTE_VALUES.values())
    train_y = torch.tensor([existence_targets(o, labels) for o in train_objects])
    prior = label_prior(train_y)
    params = vision_parameters(model)
    if not params:
        raise ModelError(f"{type(model).__name__}: no vision tower / connector parameters to pre-train")
    dim = image_token_features(model, image_inputs(processor, train_images[:1])).shape[-1]
    head = torch.nn.Linear(dim, len(labels))
    params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss_value = float("nan")
    for _ in tqdm(range(steps), desc="vision pre-training", disable=not progress):
        idx = torch.randint(len(train_y), (batch_size,), generator=gen)
        batch = image_inputs(processor, [train_images[i] for i in idx.tolist()])
        scores = head(image_token_features(model, batch)).amax(1)
        loss = balanced_bce(scores, train_y[idx], prior)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
    result = {"steps": steps, "labels": len(labels), "final_loss": loss_value}
    model.eval()
    if eval_images:
        eval_y = torch.tensor([existence_targets(o, labels) for o in eval_objects])
        scores = probe_scores(model, processor, head, eval_images)
        result["single_balanced_accuracy"] = balanced_accuracy(scores[:, :n_single], eval_y[:, :n_single])
        result["pair_balanced_accuracy"] = balanced_accuracy(scores[:, n_single:], eval_y[:, n_single:])
        result["eval_images"] = len(eval_y)
        if policy_eval:
            index, trees, answers = zip(*policy_eval, strict=True)
            result |= probe_policy_accuracy(scores[list(index)], trees, answers, labels)
    model.zero_grad(set_to_none=True)
    return result
