"""A line chart as a self-contained SVG, so the benchmark scripts need
nothing beyond Python's standard library."""

from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg_lines(title, x_label, y_label, xs, series, width=640, height=400):
    """`series` maps a legend label to one y value per x. X positions are
    spaced evenly (packet sizes are categories, not a scale)."""
    left, right, top, bottom = 60, 20, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max((v for ys in series.values() for v in ys), default=1.0) * 1.15 or 1.0

    def px(i):
        return left + (plot_w * (i + 0.5) / len(xs))

    def py(v):
        return top + plot_h * (1 - v / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
    ]
    for k in range(6):
        v = y_max * k / 5
        y = py(v)
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i, x in enumerate(xs):
        parts.append(f'<text x="{px(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 18}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    for n, (label, ys) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(ys))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(ys):
            parts.append(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
            parts.append(
                f'<text x="{px(i):.1f}" y="{py(v) - 8:.1f}" text-anchor="middle" fill="{colour}">{v:.2f}</text>'
            )
        ly = top + 14 + 16 * n
        parts.append(f'<line x1="{left + 10}" y1="{ly}" x2="{left + 30}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + 36}" y="{ly + 4}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
