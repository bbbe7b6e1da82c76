"""Discriminant heads on the Gaussian memory of finished runs: what DMC-OT's calibrated statistics would
classify as, task by task, against the run's own text classifier.

    python tools/heads_on_runs.py RUN_DIR [RUN_DIR ...] [--gamma 0.02 0.05] [--dof 20] [--weights 32 64]

For every run (a method that keeps a Gaussian memory, `learned["memory"]`: dmc, dmc-ot, cotrain, rapf) and
every task t, the model after task t (`dmc.load`) scores the images of the run's evaluation split (the
held-out validation rows when the run used `eval.split=val`, else the test split) of the classes seen so
far with:
- `text`: the run's own classifier (`classifier(seen)`; reproduces the run's A_t: a check that the images
  are the right ones);
- `cos`: its cosine classifier (DMC's prompts; of `dmc-ot-mem`, the text classifier its head is fused with);
- `qda γ`: class-wise Gaussian discriminant on the memory's means and covariances (shrunk toward a scaled
  identity by γ), on the raw image-tower features the memory is kept in (`dmc.discriminant`);
- `tν γ`: the same statistics read as multivariate Student-t densities with ν degrees of freedom;
- `lda γ`: the linear discriminant of the pooled covariance;
- `<head> + λ·cos`: log-softmax of the head plus λ times the cosine, `dmc-ot-mem`'s classifier.
It prints Avg (the mean of A_t) and Last per head and run, then their mean over the runs. Run it on
validation runs to choose a head (`dmc-ot-mem`'s defaults were chosen so, docs/results.md): the figures are
scored on the images given, and nothing is trained or written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def evaluation_images(run: Path, cfg, bench) -> tuple[np.ndarray, torch.Tensor]:
    """The run's evaluation images (uint8 (N, H, W, 3)) and their remapped labels (N,)."""
    if cfg.eval.split == "val":
        rows = np.asarray(json.loads((run / "val_rows.json").read_text())["rows"])
        src = bench.source.load(cfg.data, "train")
        items, native = src.items[rows], np.asarray(src.targets)[rows]
    else:
        src = bench.source.load(cfg.data, "test")
        items, native = src.items, np.asarray(src.targets)
    lut = {n: i for i, n in enumerate(bench.class_order)}
    keep = np.asarray([int(n) in lut for n in native])
    return items[keep], torch.as_tensor([lut[int(n)] for n in native[keep]])


def cosine_part(classifier):
    """The run's cosine classifier: the classifier itself, or the text classifier a fused one holds."""
    from dmc.methods.classifier import CosineClassifier

    return classifier if isinstance(classifier, CosineClassifier) else classifier.text


def task_scores(run: Path, t: int, images: np.ndarray, labels: torch.Tensor, seen: torch.Tensor,
                gammas: list[float], weights: list[float], dofs: list[float] = ()) -> dict[str, float]:
    import dmc
    from dmc.discriminant import fused_scores, gaussian_factors, lda_scores, lda_weights, qda_scores, student_t_scores

    model = dmc.load(run, task=t, device="cpu")
    keep = torch.isin(labels, seen)
    imgs, y = images[keep.numpy()], torch.searchsorted(seen, labels[keep])
    feats = model.features(imgs)  # raw tower outputs (N, D), the memory's space: every classifier below reads these
    with torch.no_grad():
        text = model.classifier(feats).double()  # (N, C): the run's own evaluation
        cos = cosine_part(model.classifier)(feats).double()
    bank = model.method.learned["memory"]
    means, covs = bank.means(seen.tolist()), bank.covs(seen.tolist())
    acc = lambda s: 100.0 * float((s.argmax(1) == y).double().mean())  # noqa: E731
    row = {"text": acc(text), "cos": acc(cos)}
    for g in gammas:
        mu, chol, logdet = gaussian_factors(means, covs, g)
        heads = {f"qda {g:g}": qda_scores(feats, mu, chol, logdet),
                 **{f"t{nu:g} {g:g}": student_t_scores(feats, mu, chol, logdet, nu) for nu in dofs},
                 f"lda {g:g}": lda_scores(feats, *lda_weights(means, covs, g))}
        for name, h in heads.items():
            row[name] = acc(h)
            for w in weights:
                row[f"{name} + {w:g}·cos"] = acc(fused_scores(h, cos, w))
    return row


def heads_of_run(run: Path, gammas: list[float], weights: list[float],
                 dofs: list[float] = ()) -> dict[str, tuple[float, float]]:
    """Avg and Last of every head on one run."""
    from dmc import config
    from dmc.catalog import register_lab
    from dmc.data.benchmark import make_benchmark

    register_lab()  # a run of the glyph world names the lab's benchmark, backbone and section
    cfg = config.load(run / "config.yaml")
    bench = make_benchmark(cfg, cfg.seed)
    images, labels = evaluation_images(run, cfg, bench)
    rows = []
    for t in range(1, len(bench.tasks) + 1):
        seen = torch.as_tensor(sorted(c for task in bench.tasks[:t] for c in task))
        rows.append(task_scores(run, t, images, labels, seen, gammas, weights, dofs))
        print(f"{run.name} task {t}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items() if " " not in k
                                                   or k.startswith("qda")), file=sys.stderr, flush=True)
    return {k: (float(np.mean([r[k] for r in rows])), rows[-1][k]) for k in rows[0]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--gamma", type=float, nargs="+", default=[0.02])
    p.add_argument("--dof", type=float, nargs="*", default=[20.0], help="Student-t degrees of freedom")
    p.add_argument("--weights", type=float, nargs="+", default=[64.0], help="lambda of <head> + lambda * cos")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {run.name: heads_of_run(run, args.gamma, args.weights, args.dof) for run in args.runs}
    heads = next(iter(results.values()))
    print("| head | " + " | ".join(results) + " | mean Avg | mean Last |")
    print("|---|" + "---|" * (len(results) + 2))
    for head in heads:
        cells = [f"{results[r][head][0]:.2f} / {results[r][head][1]:.2f}" for r in results]
        avg = np.mean([results[r][head][0] for r in results])
        last = np.mean([results[r][head][1] for r in results])
        print(f"| {head} | " + " | ".join(cells) + f" | {avg:.2f} | {last:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
