"""Security: YAML is loaded safely, no eval or pickle of user data, user strings are inert in
both reports, paths in a scenario stay inside its folder and the library folders unless
allowed, output is written atomically, and trace size and horizon are bounded."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from sim.config.loader import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"
CONV = REPO / "workloads" / "traces" / "azure-conv-2023.csv"
SIM = REPO / "sim"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path_factory.getbasetemp() / "sec-cache"))


def _cli(args, capsys):
    from sim.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


# ---------------------------------------------------------------- safe YAML

TAGS = ["!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system", "!!python/module:os",
        "!!python/object:sim.pipeline.Result {{}}"]


@pytest.mark.parametrize("tag", TAGS)
def test_python_tags_are_refused_in_one_line_and_never_run(tmp_path, capsys, tag):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("seed: 3", "seed: " + tag.format(marker=marker)))
    code, io = _cli(["run", bad, "--out", tmp_path / "out"], capsys)
    assert code == 2 and not marker.exists() and not (tmp_path / "out").exists()
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: malformed YAML"), io.err
    assert "could not determine a constructor" in lines[0]


def test_library_files_refuse_python_tags(tmp_path):
    from sim.config.card import CardSpec
    from sim.config.loader import load_file

    card = tmp_path / "card.yaml"
    card.write_text((REPO / "hardware_specs/cards/h100-sxm.yaml").read_text().replace(
        "vendor: nvidia", "vendor: !!python/object/apply:os.getcwd []"))
    with pytest.raises(ConfigError, match=r"card.yaml: malformed YAML \(line \d+"):
        load_file(CardSpec, card)


# ---------------------------------------------------------------- no eval, no pickle

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "input"}
FORBIDDEN_ATTRS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                   ("yaml", "load_all"), ("yaml", "unsafe_load_all"), ("os", "system"),
                   ("os", "popen"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
                   ("torch", "load"), ("marshal", "loads"), ("pickle", "load"),
                   ("pickle", "loads")}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
FORBIDDEN_KWARGS = {("allow_pickle", True), ("shell", True)}


def _py_files():
    return sorted(SIM.rglob("*.py"))


def _scan(tree: ast.AST, rel: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            found += [f"{rel}:{node.lineno}: imports {n}" for n in names
                      if n.split(".")[0] in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_CALLS:
                found.append(f"{rel}:{node.lineno}: calls {fn.id}()")
            if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and (
                    fn.value.id, fn.attr) in FORBIDDEN_ATTRS:
                found.append(f"{rel}:{node.lineno}: calls {fn.value.id}.{fn.attr}()")
            found += [f"{rel}:{node.lineno}: {kw.arg}={kw.value.value}" for kw in node.keywords
                      if isinstance(kw.value, ast.Constant)
                      and (kw.arg, kw.value.value) in FORBIDDEN_KWARGS]
        if isinstance(node, ast.Attribute) and node.attr in ("Loader", "FullLoader",
                                                             "UnsafeLoader") and \
                isinstance(node.value, ast.Name) and node.value.id == "yaml":
            found.append(f"{rel}:{node.lineno}: uses yaml.{node.attr}")
    return found


def test_no_eval_or_pickle_of_user_data_in_sim():
    """A syntax-tree scan of every module under sim/: no eval/exec, no pickle-like modules, no
    unsafe YAML loaders, no shell=True or allow_pickle=True."""
    found = [hit for f in _py_files()
             for hit in _scan(ast.parse(f.read_text(), str(f)), str(f.relative_to(REPO)))]
    assert len(_py_files()) > 30
    assert not found, "\n".join(found)


def test_the_scan_would_catch_them():
    """The scan is not vacuous: each forbidden pattern in a module is reported."""
    src = ("import pickle\nimport yaml\nfrom dill import loads\neval('1')\nyaml.load(s)\n"
           "yaml.safe_load(s, Loader=yaml.Loader)\nsubprocess.run(c, shell=True)\n"
           "np.load(p, allow_pickle=True)\nimport cloudpickle.cloudpickle\nexec('x')\n"
           "yaml.safe_load(s)\nos.system('ls')\n")
    hits = _scan(ast.parse(src), "m.py")
    assert len(hits) == 10, hits
    assert not _scan(ast.parse("import yaml\nyaml.safe_load(s)\nx.compile()\n"), "ok.py")


def test_capacity_cache_is_json_not_pickle(tmp_path, monkeypatch):
    import sim

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "c"))
    sim.run(TINY)  # a fresh in-process cache per run: the disk cache is used
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert files
    for p in files:
        json.loads(p.read_text())  # plain JSON: nothing executable is ever read back


# ---------------------------------------------------------------- escaping

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)> & | *b* [l](javascript:x)'


def _evil_scenario(tmp_path: Path) -> Path:
    doc = yaml.safe_load(TINY.read_text())
    doc["name"] = "Name " + EVIL
    doc["workloads"] = {"chat " + EVIL: doc["workloads"]["chat-8b"]}
    doc["training"] = {"train " + EVIL: doc["training"]["finetune"]}
    doc["cards"]["l40s"]["source"] = "source " + EVIL
    doc["models"] = {"llama-3.1-8b": {"source": "model source " + EVIL}}
    doc["options"] = {f"opt{i} " + EVIL: o for i, o in enumerate(doc["options"].values())}
    f = tmp_path / "evil.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return f


def test_user_strings_are_inert_in_both_reports(tmp_path):
    import sim

    res = sim.run(_evil_scenario(tmp_path))
    out = res.to_dir(tmp_path / "out")
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (page, md):  # no tag from a user string survives, in either report
        low = text.lower()
        assert "<script" not in low and "<img src=x" not in low and "onerror=alert" not in \
            low.replace("&lt;img src=x onerror=alert", "")
    # every user string is there, as text
    esc = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    for label in ("Name ", "opt0 ", "opt1 ", "source "):
        assert label + esc in page, label
    assert "chat " + esc in page or "chat " + esc.replace("&#34;", "&quot;") in page
    md_esc = ('&lt;script&gt;alert("x")&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; '
              r'&amp; \| \*b\* \[l\](javascript:x)')
    assert md.startswith("# Name " + md_esc)
    for label in ("opt0 ", "opt1 ", "chat "):
        assert label + md_esc in md, label
    # the tables keep their shape: no user string adds a cell
    rows = [ln for ln in md.splitlines() if ln.startswith("| opt")]
    assert rows and all(len(re.findall(r"(?<!\\)\|", r)) == 7 for r in rows)


def test_user_strings_are_inert_in_analysis_sections(tmp_path):
    from sim.config.scenario import load_scenario
    from sim.experiments import flip, sweep
    from sim.report.analysis import markdown, write_section

    scn = load_scenario(_evil_scenario(tmp_path))
    a = {"sweep": sweep(scn, {"finance.discount_rate": [0.05, 0.1]}),
         "flip": [flip(scn, "finance.discount_rate", (0.02, 0.2))]}
    md = markdown(a)
    page = write_section(a, tmp_path / "sec", "flip", scn)[1].read_text()
    for text in (md, page):
        low = text.lower()
        assert "<script" not in low and "<img src=x" not in low
    md_esc = ('&lt;script&gt;alert("x")&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; '
              r'&amp; \| \*b\* \[l\](javascript:x)')
    assert "opt0 " + md_esc in md or "opt1 " + md_esc in md, md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    head = {ln for ln in md.splitlines() if ln.startswith("|---")}
    assert rows and head
    for r in rows:  # no user string adds a cell
        assert len(re.findall(r"(?<!\\)\|", r)) in (4, 5), r


# ---------------------------------------------------------------- path rules


def _trace_scenario(folder: Path, trace: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "scn.yaml"
    f.write_text(TINY.read_text().replace("lengths: mlperf-llama3.1-8b", f"trace: {trace}"))
    return f


def _small_trace(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(CONV.read_text().splitlines(keepends=True)[:400]))
    return path


@pytest.fixture
def layout(tmp_path):
    """tmp/outside/trace.csv, tmp/proj/scn/ (the scenario), tmp/proj/scn/data/trace.csv."""
    inside = _small_trace(tmp_path / "proj" / "scn" / "data" / "trace.csv")
    outside = _small_trace(tmp_path / "outside" / "trace.csv")
    return tmp_path, inside, outside


def test_relative_path_inside_the_scenario_folder_runs(layout):
    import sim

    tmp, _, _ = layout
    res = sim.run(_trace_scenario(tmp / "proj" / "scn", "data/trace.csv"))
    assert res.summary["winner"] in res.summary["options"]


def test_library_relative_path_runs(layout):
    from sim.stages.inputs import resolve_path as _resolve
    from sim.config.library import Library

    tmp, _, _ = layout
    got = _resolve(tmp / "proj" / "scn", Library.default(),
                   "workloads/traces/azure-conv-2023.csv")
    assert got == CONV.resolve()


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "absolute_missing"])
def test_paths_leaving_the_scenario_folder_are_refused(layout, capsys, how):
    tmp, inside, outside = layout
    scn_dir = tmp / "proj" / "scn"
    trace = {"dotdot": "../../outside/trace.csv", "absolute": str(outside),
             "absolute_missing": str(tmp / "nope.csv"), "symlink": "data/link.csv"}[how]
    if how == "symlink":
        (scn_dir / "data" / "link.csv").symlink_to(outside)
    f = _trace_scenario(scn_dir, trace)
    out = tmp / "out"
    code, io = _cli(["run", f, "--out", out], capsys)
    assert code == 2 and not out.exists()
    line = io.err.strip()
    assert "\n" not in line and line.startswith(
        f"error: {f}: workloads.chat-8b.traffic.trace: '{trace}'"), line
    assert "--allow-outside-paths" in line
    # explicitly allowed: it runs (a missing file is still an error)
    code, io = _cli(["run", f, "--out", out, "--allow-outside-paths"], capsys)
    if how == "absolute_missing":
        assert code == 2 and "not found" in io.err and not out.exists()
    else:
        assert code == 0, io.err
        assert (out / "summary.json").is_file()


def test_allowed_outside_paths_reach_the_analyses(layout, capsys):
    """The flag covers every run the scenario's `analysis:` section and the experiment
    commands make, in this process and in worker processes."""
    tmp, _, outside = layout
    f = _trace_scenario(tmp / "proj" / "scn", str(outside))
    f.write_text(f.read_text() + "analysis: {sweep: {finance.discount_rate: [0.05, 0.1]}}\n")
    out = tmp / "out"
    code, io = _cli(["run", f, "--out", out, "--workers", "2"], capsys)
    assert code == 2 and "--allow-outside-paths" in io.err and not out.exists()
    code, io = _cli(["run", f, "--out", out, "--workers", "2", "--allow-outside-paths"], capsys)
    assert code == 0, io.err
    import pandas as pd

    assert pd.read_parquet(out / "results" / "sweep.parquet")["point"].nunique() == 2
    code, io = _cli(["sweep", f, "--set", "finance.discount_rate=0.05,0.1", "--json",
                     "--out", tmp / "sw"], capsys)
    assert code == 2 and "--allow-outside-paths" in io.err
    code, io = _cli(["sweep", f, "--set", "finance.discount_rate=0.05,0.1", "--json",
                     "--out", tmp / "sw", "--allow-outside-paths"], capsys)
    assert code == 0, io.err


def test_python_api_refuses_and_allows_by_keyword(layout):
    import sim
    from sim.stages import run

    tmp, _, outside = layout
    f = _trace_scenario(tmp / "proj" / "scn", str(outside))
    with pytest.raises(ConfigError, match="is an absolute path"):
        sim.run(f)
    assert run(f, allow_outside_paths=True).summary["options"]


# ---------------------------------------------------------------- atomic output


def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch, run_cache):
    import sim
    import sim.report.html as html

    res = sim.run(TINY, cache=run_cache)
    out = tmp_path / "out"

    def boom(_res):
        raise RuntimeError("disk full")

    monkeypatch.setattr(html, "render_html", boom)
    with pytest.raises(RuntimeError):
        res.to_dir(out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # an existing result survives a failed --force rewrite untouched
    monkeypatch.undo()
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "c"))
    res.to_dir(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(html, "render_html", boom)
    with pytest.raises(RuntimeError):
        res.to_dir(out, force=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "c") == ["out"]


# ---------------------------------------------------------------- limits


def test_trace_row_and_byte_limits_are_clear_errors(tmp_path):
    from sim.serving.traffic import EmpiricalLengths, TraceTraffic, collect

    f = _small_trace(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match=r"t.csv: more than 100 requests .*max_rows"):
        EmpiricalLengths.from_trace(f, max_rows=100)
    assert EmpiricalLengths.from_trace(f, max_rows=399).input_tokens.size == 399
    with pytest.raises(ConfigError, match=r"t.csv: .* larger than max_bytes"):
        collect(TraceTraffic(f, max_bytes=1000))


def test_pipeline_trace_limits(tmp_path, monkeypatch):
    import sim
    import sim.serving.traffic as traffic

    _small_trace(tmp_path / "data" / "trace.csv")
    f = _trace_scenario(tmp_path, "data/trace.csv")
    monkeypatch.setattr(traffic, "DEFAULT_MAX_TRACE_ROWS", 50)
    with pytest.raises(ConfigError, match=r"trace.csv: more than 50 requests"):
        sim.run(f)


@pytest.mark.parametrize("edit,needle", [
    ("horizon_years: 1", "horizon_years: must be <= 10"),
    ("count: 16", "count: must be <= 1e+06"),
])
def test_horizon_and_fleet_size_are_bounded(tmp_path, edit, needle):
    from sim.config.scenario import load_scenario

    key = edit.split(":")[0]
    big = {"horizon_years": "horizon_years: 11", "count": "count: 10000000000"}[key]
    f = tmp_path / "s.yaml"
    f.write_text(TINY.read_text().replace(edit, big))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_scenario(f)


def test_yaml_size_nodes_and_depth_are_bounded(tmp_path, monkeypatch):
    import sim.config.loader as loader
    from sim.config.loader import MAX_YAML_BYTES, parse_yaml, read_yaml

    big = tmp_path / "big.yaml"
    with open(big, "w") as fh:
        fh.write("a: '")
        fh.write("x" * (MAX_YAML_BYTES + 10))
        fh.write("'\n")
    with pytest.raises(ConfigError, match="larger than"):
        read_yaml(big)
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_yaml("a: " + "[" * 50_000 + "]" * 50_000, "deep.yaml")
    monkeypatch.setattr(loader, "MAX_YAML_NODES", 2000)  # the real bound is 200,000
    parse_yaml("a: [" + ", ".join(["1"] * 1990) + "]", "wide.yaml")
    with pytest.raises(ConfigError, match="more than 2000 YAML nodes"):
        parse_yaml("a: [" + ", ".join(["1"] * 2001) + "]", "wide.yaml")


def test_cli_shows_no_traceback_for_a_runtime_fleet_error(tmp_path, capsys):
    """A fault found only when the fleet is simulated (a campaign needing more cards than the
    option has) is located like a load error."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("cards: 8\n", "cards: 12\n"))
    code, io = _cli(["run", bad, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "Traceback" not in io.err, io.err
    # the last line (stage lines with their times may come first on a slow, cold run)
    assert io.err.strip().splitlines()[-1].startswith(
        f"error: {bad}: training.finetune#1.cards: 12 h100-sxm")
