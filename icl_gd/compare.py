"""Compare the jobs of a sweep: ICL against GD (or any other method), beside the ICL-vs-ICL order noise floor.

Two jobs form a pair when their resolved configs agree on everything but the method (a method pair), or when
both are ICL and differ only in `order_seed` (an order pair: the noise floor a GD-vs-ICL gap must clear).
Per query (joined on query id) it computes the DESIGN.md metrics from the stored top-K and distributions;
`comparison.parquet` holds one row per (pair, metric) with mean and 95% t-interval, `comparison_queries.parquet`
the per-query values, and `comparison.md` the table aggregated over seeds.

    python -m icl_gd.compare outputs/multirun/2026-11-25/12-00-00
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from icl_gd import io
from icl_gd import metrics as M
from icl_gd.analysis.order import order_sensitivity, summarize_order
from icl_gd.config import identity

log = logging.getLogger(__name__)

METHOD_ORDER = ("icl", "gd", "lora", "zeroshot")  # the first of a pair is the reference
ORDER_PAIR = "icl_vs_icl_order"
ORDER_FILE = "order_sensitivity.parquet"
TABLE_METRICS = ("overlap@k", "ocs", "top1_agreement", "label_tv", "label_js", "tv", "js", "kl")


@dataclass
class Job:
    folder: Path
    config: dict[str, Any]
    method_label: str = ""  # the method name plus what tells it apart from same-named methods of the sweep
    model_label: str = ""  # the model name, @revision when revisions vary, "(untrained)" for random_init

    def __post_init__(self) -> None:
        self.method_label = self.method_label or self.method
        self.model_label = self.model_label or model_label(self.config["model"], False)

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    def key(self, *drop: str) -> str:
        """The job's identity minus `drop` and minus `analysis` (extra measurements never change predictions)."""
        ident = identity(self.config)
        for k in (*drop, "analysis"):
            ident.pop(k, None)
        return json.dumps(ident, sort_keys=True, default=str)

    def order_rank(self) -> tuple[bool, int]:
        """Sort key within an order group: the sampled order (order_seed null) first, then by order_seed."""
        o = self.config.get("order_seed")
        return (o is not None, o or 0)

    def predictions(self, columns: list[str] | None = None) -> pd.DataFrame:
        """predictions.parquet, or only those of `columns` it has."""
        return io.read_parquet(self.folder / io.PREDICTIONS, columns)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(method: dict[str, Any], varying: list[str]) -> str:
    """`tag` when set, else the name plus the `varying` keys that are set: "gd", "gd(lr=0.001)", "gd(batch_size=all)"."""
    if method.get("tag"):
        return str(method["tag"])
    shown = [
        f"{k}={_fmt(method[k])}" for k in varying if k not in ("name", "tag") and method.get(k) is not None
    ]
    return f"{method['name']}({','.join(shown)})" if shown else str(method["name"])


def model_label(model: dict[str, Any], show_revision: bool) -> str:
    """The model name, "@revision" when the sweep holds several revisions, " (untrained)" for random weights."""
    label = str(model["name"])
    if show_revision and model.get("revision"):
        label += f"@{model['revision']}"
    return label + (" (untrained)" if model.get("random_init") else "")


def _varying(dicts: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


def label_jobs(jobs: list[Job]) -> list[Job]:
    """Give each job its method and model label, from what varies among the sweep's same-named methods/models."""
    by_method: dict[str, list[Job]] = {}
    by_model: dict[str, list[Job]] = {}
    for j in jobs:
        by_method.setdefault(j.method, []).append(j)
        by_model.setdefault(j.config["model"]["name"], []).append(j)
    for group in by_method.values():
        varying = _varying([j.config["method"] for j in group])
        for j in group:
            j.method_label = method_label(j.config["method"], varying)
    for group in by_model.values():
        revisions = "revision" in _varying([j.config["model"] for j in group])
        for j in group:
            j.model_label = model_label(j.config["model"], revisions)
    return jobs


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every finished language-model job under the sweep folder, labelled (`label_jobs`)."""
    jobs = []
    for status in sorted(Path(sweep_dir).rglob(io.STATUS)):
        folder = status.parent
        st = io.read_status(folder)
        if not st or st.get("status") != "done" or not (folder / io.PREDICTIONS).exists():
            continue
        jobs.append(Job(folder, yaml.safe_load((folder / io.CONFIG).read_text())))
    return label_jobs(jobs)


def find_pairs(jobs: list[Job]) -> list[tuple[str, Job, Job]]:
    """(pair type, reference job, other job): method pairs and ICL order pairs."""
    pairs = []
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    by_key: dict[str, list[Job]] = {}
    for j in jobs:
        by_key.setdefault(j.key("method"), []).append(j)
    for group in by_key.values():
        group.sort(key=lambda j: (rank.get(j.method, len(rank)), j.method_label))
        for a, b in itertools.combinations(group, 2):
            if a.method_label != b.method_label:
                pairs.append((f"{a.method_label}_vs_{b.method_label}", a, b))
    icl: dict[str, list[Job]] = {}
    for j in jobs:
        if j.method == "icl":
            icl.setdefault(j.key("order_seed"), []).append(j)
    for group in icl.values():
        group.sort(key=Job.order_rank)
        for a, b in itertools.combinations(group, 2):
            pairs.append((ORDER_PAIR, a, b))
    return pairs


def _stack(col: pd.Series, dtype=None) -> torch.Tensor:
    return torch.as_tensor(np.stack(col.to_numpy()), dtype=dtype)


def _dists(col: pd.Series) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.frombuffer(b, dtype=np.float16) for b in col]).astype(np.float32))


def pair_metrics(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per-query comparison metrics of two prediction frames joined on query id."""
    j = a.merge(b, on="query_id", suffixes=("_a", "_b"))
    if len(j) == 0:
        raise ValueError("the two jobs share no query ids: they were not run on the same queries")
    ids_a, ids_b = _stack(j.topk_ids_a, torch.long), _stack(j.topk_ids_b, torch.long)
    pa, pb = _stack(j.topk_probs_a, torch.float64), _stack(j.topk_probs_b, torch.float64)
    out = {
        "query_id": j.query_id,
        "overlap@k": M.topk_overlap(ids_a, ids_b).numpy(),
        "ocs": M.overlap_cosine(ids_a, pa, ids_b, pb).numpy(),
        "top1_agreement": (ids_a[:, 0] == ids_b[:, 0]).double().numpy(),
        "accuracy_a": j.correct_a.astype(float).to_numpy(),
        "accuracy_b": j.correct_b.astype(float).to_numpy(),
    }
    if "label_probs_a" in j and "label_probs_b" in j:
        la, lb = (
            M.renormalize(_stack(j.label_probs_a, torch.float64)),
            M.renormalize(_stack(j.label_probs_b, torch.float64)),
        )
        out.update(
            {
                "label_agreement": M.argmax_agreement(la, lb).numpy(),
                "label_tv": M.total_variation(la, lb).numpy(),
                "label_js": M.js_divergence(la, lb).numpy(),
                "label_kl": M.kl_divergence(la, lb).numpy(),
            }
        )
    if "full_dist_a" in j and "full_dist_b" in j:
        fa, fb = _dists(j.full_dist_a), _dists(j.full_dist_b)
        fa, fb = (
            M.renormalize(fa.double()),
            M.renormalize(fb.double()),
        )  # float16 storage: sums drift slightly from 1
        out.update(
            {
                "tv": M.total_variation(fa, fb).numpy(),
                "js": M.js_divergence(fa, fb).numpy(),
                "kl": M.kl_divergence(fa, fb).numpy(),
            }
        )
    return pd.DataFrame(out)


def _describe(job_a: Job, job_b: Job, pair_type: str) -> dict[str, Any]:
    c = job_a.config
    return {
        "pair_type": pair_type,
        "method_a": job_a.method_label,
        "method_b": job_b.method_label,
        "model": job_a.model_label,
        "revision": c["model"].get("revision"),
        "random_init": bool(c["model"].get("random_init")),
        "dataset": c["dataset"]["name"],
        "demos": c["demos"],
        "seed": c["seed"],
        "order_seed_a": c.get("order_seed"),
        "order_seed_b": job_b.config.get("order_seed"),
        "job_a": str(job_a.folder),
        "job_b": str(job_b.folder),
    }


def compare_jobs(jobs: list[Job]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-pair summary rows, per-query rows) for every pair among `jobs`."""
    cache: dict[Path, pd.DataFrame] = {}

    def preds(job: Job) -> pd.DataFrame:
        if job.folder not in cache:
            cache[job.folder] = job.predictions()
        return cache[job.folder]

    summary, per_query = [], []
    for pair_type, a, b in find_pairs(jobs):
        q = pair_metrics(preds(a), preds(b))
        desc = _describe(a, b, pair_type)
        per_query.append(q.assign(**{k: v for k, v in desc.items() if k not in ("job_a", "job_b")}))
        for metric in q.columns.drop("query_id"):
            mean, lo, hi = M.mean_ci(torch.as_tensor(q[metric].to_numpy(dtype=float, copy=True)))
            summary.append({**desc, "metric": metric, "mean": mean, "ci_lo": lo, "ci_hi": hi, "n": len(q)})
    return pd.DataFrame(summary), (pd.concat(per_query, ignore_index=True) if per_query else pd.DataFrame())


def aggregate(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval of each metric per (model, dataset, demos, pair type), pooling queries and seeds."""
    keys = ["model", "dataset", "demos", "pair_type"]
    rows = []
    for k, g in per_query.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, k, strict=True))
        row["n"] = len(g)
        for metric in [c for c in g.columns if c in TABLE_METRICS or c.startswith("accuracy")]:
            mean, lo, hi = M.mean_ci(torch.as_tensor(g[metric].to_numpy(dtype=float, copy=True)))
            row[metric] = mean
            row[f"{metric}_ci"] = (hi - lo) / 2 if np.isfinite(hi) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A readable table: mean ± half-width of the 95% interval."""
    metrics = [m for m in ("accuracy_a", "accuracy_b", *TABLE_METRICS) if m in table.columns]
    head = ["model", "dataset", "demos", "pair", "n", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r["model"]), str(r["dataset"]), str(r["demos"]), str(r["pair_type"]), str(r["n"])]
        for m in metrics:
            v, ci = r.get(m), r.get(f"{m}_ci")
            cells.append("" if pd.isna(v) else (f"{v:.3f}" if pd.isna(ci) else f"{v:.3f} ± {ci:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        "\n_a = the first method of the pair (the reference), b = the second. overlap@k, ocs (overlap cosine "
        "similarity) and top1_agreement: higher = more alike; tv, js, kl (full vocabulary) and label_tv, label_js "
        "(over the label words): lower = more alike. ± is the half-width of a 95% t-interval over queries and "
        f"seeds. `{ORDER_PAIR}` is the noise floor: ICL against ICL with the same demos in another order._\n"
    )
    return "\n".join(lines) + "\n" + legend


def order_markdown(table: pd.DataFrame) -> str:
    """Mean order sensitivity per method: the std across demo orders of each label's probability."""
    lines = [
        "| model | dataset | demos | method | orders | n | std of label prob |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ci = (r["ci_hi"] - r["ci_lo"]) / 2 if pd.notna(r["ci_hi"]) else float("nan")
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['demos']} | {r['method']} | {r['n_orders']} | {r['n']} | "
            f"{r['std']:.4f} ± {ci:.4f} |"
        )
    return "\n".join(lines) + (
        "\n\n_Per query, the standard deviation across demo orders of each label word's probability, averaged "
        "over labels; mean ± 95% half-width over queries and seeds. 0 = the order does not matter._\n"
    )


def compare_sweep(sweep_dir: str | Path, logger_cfg: Any = None) -> pd.DataFrame:
    """Compare every pair of a sweep folder, write the files, print the table, log a W&B `compare` run."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    summary, per_query = compare_jobs(jobs)
    orders = order_sensitivity(jobs)
    order_md = ""
    if not orders.empty:
        io.write_parquet(sweep_dir / ORDER_FILE, orders)
        order_md = "\n## Order sensitivity\n\n" + order_markdown(summarize_order(orders))
    if summary.empty:
        log.warning("no comparable pairs among the %d finished jobs in %s", len(jobs), sweep_dir)
        io.write_parquet(sweep_dir / "comparison.parquet", summary)
        if order_md:
            io.write_text(
                sweep_dir / "comparison.md", f"# Comparison of {len(jobs)} jobs in {sweep_dir}\n{order_md}"
            )
        return summary
    table = aggregate(per_query)
    io.write_parquet(sweep_dir / "comparison.parquet", summary)
    io.write_parquet(sweep_dir / "comparison_queries.parquet", per_query)
    md = f"# Comparison of {len(jobs)} jobs in {sweep_dir}\n\n" + to_markdown(table) + order_md
    io.write_text(sweep_dir / "comparison.md", md)
    print(md, flush=True)  # the table is the sweep's answer: show it where the user ran the command
    _log_to_wandb(sweep_dir, logger_cfg or _logger_of(jobs), summary, table)
    return summary


def _logger_of(jobs: list[Job]) -> dict[str, Any]:
    return jobs[0].config.get("logger", {"name": "none"}) if jobs else {"name": "none"}


def _log_to_wandb(sweep_dir: Path, logger_cfg: Any, summary: pd.DataFrame, table: pd.DataFrame) -> None:
    from icl_gd.tracking import make_tracker  # noqa: PLC0415

    tracker = make_tracker(
        logger_cfg,
        output_dir=sweep_dir,
        config={"sweep_dir": str(sweep_dir)},
        group=sweep_dir.name,
        job_type="compare",
        name=f"compare-{sweep_dir.name}",
    )
    try:
        tracker.log_table("compare/pairs", summary)
        tracker.log_table("compare/table", table)
        flat = {}
        for _, r in table.iterrows():
            for m in TABLE_METRICS:
                if m in r and pd.notna(r[m]):
                    flat[f"compare/{r['dataset']}/demos={r['demos']}/{r['pair_type']}/{m}"] = r[m]
        tracker.summary(flat)
    finally:
        tracker.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Compare the jobs of a sweep folder (ICL vs GD, order noise floor)."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--logger",
        choices=["wandb", "none"],
        default=None,
        help="override the jobs' logger for the comparison run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if not args.sweep_dir.is_dir():
        parser.error(
            f"{args.sweep_dir} is not a folder: pass the sweep folder (hydra.sweep.dir) of a multirun"
        )
    compare_sweep(args.sweep_dir, logger_cfg={"name": args.logger} if args.logger == "none" else None)


if __name__ == "__main__":
    main()
