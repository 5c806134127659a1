"""The HTML report: self-contained, deterministic, escaped, and sound in a real browser."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest
from markupsafe import escape

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"
CHROMIUM = "/usr/bin/chromium"
EVIL_NAME = '<script>alert(1)</script> "quotes" & <b>'
EVIL_OPTION = 'h100 <script>alert(1)</script> "quotes" & <b>'


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("report-cache")


def _run(path: Path, cache: Path):
    from sim.stages import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEETSIM_CACHE", str(cache))
        return run(path)


@pytest.fixture(scope="session")
def result(cache_dir):
    return _run(TINY, cache_dir)


@pytest.fixture(scope="session")
def html(result):
    from sim.report.html import render_html

    return render_html(result)


def test_report_names_winner_and_every_option(result, html):
    winner = result.summary["winner"]
    assert winner in result.summary["options"]
    summary = html[html.index('id="summary"'): html.index("</section>")]
    assert f'<span class="name">{winner}</span> wins' in summary
    for name in result.summary["options"]:
        assert name in summary  # each option's $/M tokens is in the summary
    assert "single-seed" in summary and "Monte Carlo" in summary
    assert str(escape(result.summary["winner_rule"])) in summary  # ">=" arrives as "&gt;="


def test_report_is_self_contained(html):
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == 6 and all(i.startswith("data:image/png;base64,") for i in images)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<script" not in html.lower()
    assert "url(" not in html  # no external fonts or background images in the CSS
    assert "@media print" in html


def test_report_is_deterministic(result, html):
    from sim.report.html import render_html

    assert render_html(result) == html


def test_assumptions_mark_overrides_presets_and_defaults(html):
    table = html[html.index('id="assumptions"'): html.index('id="caveats"')]
    # YAML paths may wrap only after their dots (<wbr>), never inside a word
    table = table.replace(".<wbr>", ".")
    row = re.search(r"<tr><td class=\"path\">cards\.l40s\.price_usd</td>(.*?)</tr>", table, re.S)
    assert row and "8,500" in row[1] and "override" in row[1]
    assert "reference-data A3 street guess midpoint (test)" in row[1]
    row = re.search(r"site\.electricity_usd_per_kwh</td>(.*?)</tr>", table, re.S)
    assert row and "0.0815" in row[1] and "preset us-colo" in row[1] and "EIA 2024" in row[1]
    assert re.search(r"finance\.discount_rate</td><td>0\.08</td>\s*<td><span class=\"tag "
                     r"default\">default</span>", table)
    assert "options.h100+l40s.buy[1].price_usd" in table
    assert "not set: cards.l40s.price_usd" in table


def test_no_winner_is_said_plainly(result):
    import dataclasses

    from sim.report.html import render_html

    options = {k: dataclasses.replace(v, slo_attainment=0.9 + 0.01 * i)
               for i, (k, v) in enumerate(result.options.items())}
    page = render_html(dataclasses.replace(
        result, options=options, decision=dataclasses.replace(result.decision, winner=None)))
    lead = page[page.index('id="summary"'): page.index("</section>")]
    assert "No option meets the SLOs" in lead and " wins" not in lead
    best = list(options)[-1]
    assert f'<span class="name">{best}</span>,\nserving 91.0%' in lead


def test_many_options_show_four_timelines(tmp_path, cache_dir):
    from sim.report.html import render_html

    text = TINY.read_text()
    extra = "".join(f"  h100-{n}:\n    buy: [{{card: h100-sxm, count: {n}, at: 2026-01, "
                    f"price_usd: 30000}}]\n" for n in (12, 20, 24))
    many = tmp_path / "many.yaml"
    many.write_text(text.rstrip("\n") + "\n" + extra)
    res = _run(many, cache_dir)
    assert len(res.summary["options"]) == 5
    page = render_html(res)
    assert page.count("Only the first 4 options are shown.") == 2
    for name in res.summary["options"]:
        assert f'<td class="name">{name}' in page


def test_user_strings_are_escaped(tmp_path, cache_dir):
    from sim.report.html import render_html

    text = TINY.read_text()
    assert "name: Tiny test scenario\n" in text and "\n  h100:\n" in text
    text = text.replace("name: Tiny test scenario\n", f"name: '{EVIL_NAME}'\n")
    text = text.replace("\n  h100:\n", f"\n  '{EVIL_OPTION}':\n")
    evil = tmp_path / "evil.yaml"
    evil.write_text(text)
    page = render_html(_run(evil, cache_dir))
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quotes&#34; &amp; &lt;b&gt;" in page
    assert page.count("&lt;script&gt;") >= 3  # title, heading, option rows
    m = re.search(r"<title>(.*?)</title>", page, re.S)
    assert m and m[1].startswith("&lt;script&gt;")


def test_to_dir_writes_the_html_report(result, tmp_path):
    out = result.to_dir(tmp_path / "out")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and result.summary["winner"] in page


def _browser_or_skip():
    """Playwright and the distribution's Chromium, or skip (fail under CI, which installs them)."""
    why = None
    if importlib.util.find_spec("playwright") is None:
        why = "Python playwright is not installed (pip install -e '.[dev]')"
    if why is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(f"browser test skipped: {why}")
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def test_report_in_a_real_browser(result, html, tmp_path):
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "report.html"
    page_file.write_text(html, encoding="utf-8")
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            assert page.title() == f"{result.scenario.name} — fleetsim report"
            sizes = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            assert len(sizes) == 6 and all(ok and w > 0 for ok, w in sizes), sizes
            summary = page.inner_text("#summary")
            assert f"{result.summary['winner']} wins" in summary
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.fixture(scope="session")
def analysed(result, cache_dir):
    """The tiny run with a small Monte Carlo, a flip point and the optimiser attached."""
    from sim.config.paths import with_overrides
    from sim.experiments.suite import run_analyses

    scn = with_overrides(result.scenario, {"analysis": {
        "monte_carlo": 8, "optimize": True,
        "flip": [{"param": "cards.l40s.price_usd", "between": [1000, 60000],
                  "options": ["h100", "h100+l40s"]}]}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEETSIM_CACHE", str(cache_dir))
        an = run_analyses(scn, base=TINY.parent)
    return dataclasses.replace(result, scenario=scn, analyses=an)


def test_summary_names_the_best_plan_states_confidence_and_defines_columns_in_a_browser(
        analysed, tmp_path):
    """What a planner reads first (issue 18): the best plan found (the optimiser's when it
    meets the SLOs for less than the winner), how sure the answer is, and every column of the
    options table defined."""
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from sim.report.analysis import verdict
    from sim.report.html import render_html

    v = verdict(analysed)
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(analysed), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.goto(page_file.as_uri())
            best = page.inner_text("#best-plan")
            assert best.startswith("Best plan found")
            if v["best_plan"]["name"] == "optimised plan":
                assert "optimiser's plan" in best and "meets the SLOs" in best
            else:
                assert v["best_plan"]["name"] in best
            conf = page.inner_text("#confidence")
            assert "confidence is" in conf and "Monte Carlo draws" in conf
            heads = page.evaluate("Array.from(document.querySelector('#options table')"
                                  ".querySelectorAll('thead th'))"
                                  ".map(t => t.innerText.split('\\n')[0].trim())")
            defined = page.evaluate("Array.from(document.querySelectorAll('#options-columns dt'))"
                                    ".map(t => t.innerText.trim())")
        finally:
            browser.close()
    assert heads[0] == "option"
    assert [h for h in heads[1:] if h not in defined] == []


def test_summary_json_carries_the_verdict(analysed, tmp_path):
    import json

    out = analysed.to_dir(tmp_path / "o")
    s = json.loads((out / "summary.json").read_text())
    assert s["best_plan"]["npv_usd"] <= min(v["npv_usd"] for v in s["options"].values()
                                            if v["slo_attainment"] >= s["slo_tolerance"])
    assert "confidence is" in s["confidence"]
