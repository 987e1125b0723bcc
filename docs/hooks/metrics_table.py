"""The metrics page's table, built at each docs build from the server's own
Prometheus registry (``celery_ws.server.metrics.Metrics``): every metric, its
type, labels, label values and help text, so the page lists exactly what
``/metrics`` serves. ``<!-- metrics-table -->`` on a page marks where it goes."""

from __future__ import annotations

from typing import Any

from prometheus_client import Metric

from celery_ws.server.metrics import Metrics

MARKER = "<!-- metrics-table -->"
_SUFFIX = {"counter": "_total"}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, table())


def table() -> str:
    metrics = Metrics(lambda: 0)
    labels = {
        wrapper._name: tuple(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if hasattr(wrapper, "_labelnames")
    }
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    rows += [_row(family, labels.get(family.name, ())) for family in metrics.registry.collect()]
    return "\n".join(rows) + "\n"


def _row(family: Metric, names: tuple[str, ...]) -> str:
    values = {name: sorted({s.labels[name] for s in family.samples if name in s.labels}) for name in names}
    labels = "<br>".join(
        f"`{name}`" + (": " + ", ".join(f"`{v}`" for v in found) if found else "")
        for name, found in values.items()
    )
    text = family.documentation
    if family.type == "histogram":
        bounds = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
        text += " (buckets, seconds: " + ", ".join(b for b in bounds if b != "+Inf") + ")"
    name = family.name + _SUFFIX.get(family.type, "")
    return f'| <a id="{family.name}"></a>`{name}` | {family.type} | {labels} | {text} |'
