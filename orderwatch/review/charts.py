"""Charts as inline SVG strings: no script, no font or stylesheet to fetch, so a report opens
anywhere, offline. Three shapes cover the report: stacked columns over time, horizontal bars,
and bars that diverge from zero (changes)."""

from __future__ import annotations

from html import escape

__all__ = ["PALETTE", "diverging_bars", "horizontal_bars", "stacked_columns"]

PALETTE = ("#3b6ea8", "#e08a2c", "#4c9a5b", "#c4483e", "#7d5ba6", "#8c6d46", "#d277b0", "#6f7f8f")
_FONT = 'font-family="sans-serif" font-size="11"'


def _label_width(rows: list[tuple[str, float]]) -> int:
    """Room for the longest label (capitals take about 7.5 px a character at 11 px), 120 to 440 px."""
    longest = max((len(label) for label, _ in rows), default=0)
    return int(min(440, max(120, 7.5 * min(longest, 56) + 12)))


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def stacked_columns(
    buckets: list[str], series: dict[str, list[float]], *, title: str, width: int = 720, height: int = 260
) -> str:
    """One column per bucket, stacked by series (e.g. per day, by category), with a legend."""
    left, bottom, top, legend_h = 48, 40, 28, 18 * ((len(series) + 3) // 4)
    plot_h = height - bottom - top
    totals = [sum(vals[i] for vals in series.values()) for i in range(len(buckets))]
    peak = max(totals, default=0) or 1
    col_w = (width - left - 10) / max(len(buckets), 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + legend_h}" '
        f'viewBox="0 0 {width} {height + legend_h}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 4}" {_FONT} text-anchor="end">{_fmt(peak)}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" {_FONT} text-anchor="end">0</text>',
    ]
    every = max(1, len(buckets) // 12)
    for i, label in enumerate(buckets):
        x = left + i * col_w
        y = float(top + plot_h)
        for k, (name, vals) in enumerate(series.items()):
            h = vals[i] / peak * plot_h
            if h <= 0:
                continue
            y -= h
            out.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(col_w - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(label)} {escape(name)}: '
                f"{_fmt(vals[i])}</title></rect>"
            )
        if i % every == 0:
            out.append(
                f'<text x="{x + col_w / 2:.1f}" y="{top + plot_h + 14}" {_FONT} text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    for k, name in enumerate(series):
        lx, ly = left + (k % 4) * 170, height + (k // 4) * 18 - 4
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}" {_FONT}>{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def horizontal_bars(
    rows: list[tuple[str, float]],
    *,
    title: str,
    maximum: float | None = None,
    percent: bool = False,
    width: int = 720,
) -> str:
    """One bar per row, longest scale = `maximum` (default the largest value)."""
    label_w, row_h, top = _label_width(rows), 20, 26
    height = top + row_h * max(len(rows), 1) + 6
    peak = maximum if maximum is not None else max((v for _, v in rows), default=0) or 1
    bar_w = width - label_w - 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="0" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(rows):
        y = top + i * row_h
        w = max(0.0, value) / peak * bar_w if peak else 0.0
        shown = f"{value:.1%}" if percent else _fmt(value)
        out.append(f'<text x="{label_w - 6}" y="{y + 13}" {_FONT} text-anchor="end">{escape(label[:56])}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 6}" fill="{PALETTE[0]}"/>')
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" {_FONT}>{shown}</text>')
    out.append("</svg>")
    return "".join(out)


def diverging_bars(rows: list[tuple[str, float]], *, title: str, width: int = 720) -> str:
    """Changes around zero: rises to the right in red, falls to the left in green."""
    label_w, row_h, top = _label_width(rows), 20, 26
    height = top + row_h * max(len(rows), 1) + 6
    peak = max((abs(v) for _, v in rows), default=0) or 1
    half = (width - label_w - 60) / 2
    mid = label_w + half
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="0" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<line x1="{mid}" y1="{top}" x2="{mid}" y2="{height - 4}" stroke="#999"/>',
    ]
    for i, (label, value) in enumerate(rows):
        y = top + i * row_h
        w = abs(value) / peak * half
        x = mid if value >= 0 else mid - w
        colour = PALETTE[3] if value > 0 else PALETTE[2]
        out.append(f'<text x="{label_w - 6}" y="{y + 13}" {_FONT} text-anchor="end">{escape(label[:56])}</text>')
        out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>')
        tx = mid + w + 4 if value >= 0 else mid - w - 4
        anchor = "start" if value >= 0 else "end"
        out.append(f'<text x="{tx:.1f}" y="{y + 13}" {_FONT} text-anchor="{anchor}">{value:+,.0f}</text>')
    out.append("</svg>")
    return "".join(out)
