"""The fleet-planning report: one self-contained HTML file from a `Result` (`render_html`).

`report` reads only a `sim.pipeline.Result`: `plots` turns its frames into PNG images (matplotlib,
no pyplot, no global state), `html` fills `templates/report.html.j2` (jinja2, every user string
escaped) with the executive summary, the plots as base64 data URIs, the tables, the assumptions
and the caveats. The output has no scripts and no external resources and is byte-for-byte the
same for the same `Result`.
"""
