"""HTML building blocks shared by the two reports (site report and central PI report).

Numbers are formatted once here, and every estimate is rendered with the same honesty marks:

- an estimate whose 95 % CI contains the null (AUC 0.5, hazard ratio 1, κ 0) carries "CI includes <null>";
- an estimate that rests on fewer patients than the protocol minimum (``configs/study.yaml``
  ``statistics.min_patients_estimate``) carries "n = k < minimum";
- a value that could not be estimated says why ("not estimable: …") instead of showing a dash or "nan".

Figures are numbered in the order they appear (``Figure 1.`` …), and :func:`page` wraps the sections with the
title block, the synthetic-cohort banner and a contents list into the print-ready template.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from evaluation.protocol import load_protocol
from evaluation.report_figures import FigureEntry

CODEC_WORDS: dict[str, str] = {
    "CkksCodec": "summed under CKKS encryption (the centre added ciphertexts; a key holder decrypted the sum once)",
    "PlainCodec": "summed unencrypted (PlainCodec, a test/single-site mode: the centre saw each site's counts)",
}


def codec_words(codec: str) -> str:
    """How the site aggregates were combined, in words (the codec's class name as metrics.json holds it)."""
    return CODEC_WORDS.get(codec, f"combined with {codec}")


def finite(value: Any) -> bool:
    """A real, finite number (not None, NaN, inf or a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell: ``–`` for missing, ``not reached`` for an infinite median, never ``nan``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if (isinstance(value, float) and math.isinf(value)) or value == "inf":
        return "not reached"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def ci(pair: Sequence[Any] | None, digits: int = 2) -> str:
    """``low–high`` of a 95 % CI, or ``–``."""
    if not pair or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "–"
    return f"{fmt(pair[0], digits)}–{fmt(pair[1], digits)}"


def min_patients() -> int:
    """The protocol's minimum number of patients for an estimate (``statistics.min_patients_estimate``)."""
    return load_protocol().statistics.min_patients_estimate


def registration() -> str:
    """The trial registration as the report's first facts show it (``configs/study.yaml`` ``registration``)."""
    reg = load_protocol().registration
    return f"{html.escape(reg.number)} ({html.escape(reg.registry)})"


def not_estimable_reason(block: Mapping[str, Any], key: str) -> str | None:
    """Why ``block[key]`` is not estimable, as ``metrics.json`` says it (``<key>_not_estimable``, docs/report.md)."""
    reason = block.get(f"{key}_not_estimable") or block.get(f"{key}_reason")
    return str(reason) if reason else None


def flags(value: Any, interval: Sequence[Any] | None, *, null: float | None = None, n: int | None = None) -> list[str]:
    """The honesty marks of one estimate (CI spans the null; fewer patients than the protocol minimum)."""
    out = []
    if null is not None and interval and all(isinstance(v, int | float) and math.isfinite(v) for v in interval):
        if interval[0] <= null <= interval[1]:
            out.append(f"CI includes {null:g}")
    if n is not None and n < min_patients():
        out.append(f"n = {n} &lt; {min_patients()} (protocol minimum)")
    return out


def estimate(value: Any, interval: Sequence[Any] | None = None, *, null: float | None = None, n: int | None = None,
             digits: int = 2, reason: str | None = None) -> str:
    """An estimate with its CI and marks; a missing value says why it is not estimable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if reason:
            why = html.escape(reason, quote=False)
        elif n is not None and n < min_patients():
            why = f"n = {n} &lt; {min_patients()} (protocol minimum)"
        else:
            why = "not estimable on these data"
        return f'<span class="ne">not estimable: {why}</span>'
    text = fmt(value, digits) + (f" ({ci(interval, digits)})" if interval is not None else "")
    marks = "".join(f' <span class="flag">{m}</span>' for m in flags(value, interval, null=null, n=n))
    return text + marks


def est(block: Mapping[str, Any], key: str, ci_key: str | None = None, **kw: Any) -> str:
    """:func:`estimate` of ``block[key]`` with its CI (``<key>_ci`` unless ``ci_key``) and the block's own reason
    when it is null (``<key>_not_estimable``)."""
    return estimate(block.get(key), block.get(ci_key or f"{key}_ci"), reason=not_estimable_reason(block, key), **kw)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """A plain HTML table; header cells are escaped, body cells are HTML already."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class FigureNumbers:
    """Numbers figures in order of appearance; ``figure(entry)`` returns the embedded ``<figure>``."""

    count: int = 0
    numbered: list[tuple[int, str]] = field(default_factory=list)

    def figure(self, entry: FigureEntry) -> str:
        self.count += 1
        self.numbered.append((self.count, entry.name))
        data = base64.b64encode(entry.png.read_bytes()).decode("ascii")
        caption = html.escape(entry.caption)
        return (f'<figure id="fig-{entry.name}"><img src="data:image/png;base64,{data}" alt="Figure {self.count}: '
                f'{caption}"><figcaption><b>Figure {self.count}.</b> {caption}</figcaption></figure>')


def sections_html(sections: Sequence[tuple[str, str]], bodies: Mapping[str, str], figures: Sequence[FigureEntry]
                  ) -> str:
    """Every section in order, each with its body and then its figures (numbered across the report)."""
    numbers = FigureNumbers()
    parts = []
    for index, (sid, title) in enumerate(sections, start=1):
        body = bodies.get(sid, "") + "".join(numbers.figure(f) for f in figures if f.section == sid)
        parts.append(f'<section id="{sid}"><h2>{index}. {html.escape(title)}</h2>{body}</section>')
    return "\n".join(parts)


def contents(sections: Sequence[tuple[str, str]]) -> str:
    """The contents list (links to every section)."""
    items = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>' for sid, title in sections)
    return f'<nav id="contents"><h2>Contents</h2><ol>{items}</ol></nav>'


def synthetic_banner(source: str | None) -> str:
    """The banner a report carries when its data are synthetic (``source`` says which generator)."""
    if not source:
        return ""
    return (f'<div class="banner" id="synthetic-banner"><b>Synthetic cohort.</b> {html.escape(source)}. These '
            "numbers describe generated data, not patients; they demonstrate the pipeline and must not be read "
            "as study results.</div>")


def page(*, title: str, kind: str, facts: Sequence[tuple[str, str]], banner: str, sections: Sequence[tuple[str, str]],
         bodies: Mapping[str, str], figures: Sequence[FigureEntry], footer: str) -> str:
    """The whole self-contained report: title block, banner, key facts, contents, numbered sections."""
    facts_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    template = Template((Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(title), kind=html.escape(kind), facts=f'<table class="facts">{facts_html}</table>',
        banner=banner, contents=contents(sections), sections=sections_html(sections, bodies, figures),
        footer=footer,
    )


def package_version() -> str:
    """The installed fedresponse distribution's version (package metadata; the CLI package is not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedresponse")
    except PackageNotFoundError:
        return "unknown (not installed)"


def json_safe(value: Any) -> Any:
    """``value`` with NaN as null and ±inf as ``"inf"``/``"-inf"`` (strict JSON, as metrics.json documents)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
