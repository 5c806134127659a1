"""The fleet-planning report: one self-contained HTML file from a `Result` (`render_html`).

`report` reads only a `sim.pipeline.Result`: `plots` turns its frames into PNG images (matplotlib,
no pyplot, no global state), `html` fills `templates/report.html.j2` (jinja2, every user string
escaped) with the executive summary, the plots as base64 data URIs, the tables, the assumptions
and the caveats. The output has no scripts and no external resources and is byte-for-byte the
same for the same `Result`.
"""


def md_text(text: object) -> str:
    """A user string (scenario, option, workload name) as inert Markdown: one line, HTML
    escaped (`<script>` shows as text in any renderer), and the characters that make links,
    emphasis, code or table cells backslashed."""
    import html
    import re

    s = html.escape(" ".join(str(text).split()), quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", s)


def json_safe(o: object) -> object:
    """`o` with numpy scalars as Python numbers and NaN or infinity as None, through dicts,
    lists and tuples (JSON has no NaN)."""
    import math

    import numpy as np

    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o
