"""The study report's findings, labels, trade-off plot and browser layout (issue 18, items 5-7).

The fast tests render a hand-written ``results.json`` of a default-sized study (6 languages, SFT and DPO, weight
grids with their endpoints, merge-then-DPO, a language merge, both searches). It is built with the runner's own
record builders (the default spec's typed model ids for the models, ``environment`` for the env block) and metric blocks
in evaluate's form ``{value, lo, hi, n, note}``, so it follows the real schema. The slow test renders a real smoke
study and saves the screenshot used by the docs (docs/img/study_report.png).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safemerge.study.report import build_tables, write_report
from safemerge.study.report.findings import findings
from safemerge.study.report.plots import place_labels, tradeoff_figure
from safemerge.study.runner import environment
from safemerge.study.names import ModelEntry
from safemerge.study.selection import SCORE, score
from safemerge.study.spec import default_spec

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ROOT = Path(__file__).resolve().parents[2]
LANGS = ["en", "fr", "es", "ru", "hi", "ar"]
KEYS = ("harm_rate", "harm_change", "alignment", "over_refusal", "acc_gen", "acc_mc", "win_rate", "wrong_language")


# ----------------------------------------------------------------------------------------------- the fixture
def _m(value: float, half: float, n: int) -> dict:
    """One metric in evaluate's form (fractions; harm_change a relative change, may be negative)."""
    return {"value": value, "lo": value - half, "hi": value + half, "n": n, "note": ""}


def _eval(harm: float, win: float, *, half: float = 0.05, lang_half: float = 0.12, spread: float = 0.0,
          base: bool = False) -> dict:
    """An eval summary: overall harm change / win-rate with CIs of +-half; languages spread around them."""
    def block(h: float, w: float, hw: float, n: int) -> dict:
        out = {"harm_rate": _m(min(1.0, max(0.0, 0.8 * (1 + h))), hw, n), "alignment": _m(0.5 - h / 4, hw, n),
               "over_refusal": _m(0.1, hw, n), "acc_gen": _m(0.4, hw, n), "acc_mc": _m(0.6, hw, n),
               "wrong_language": _m(0.02, 0.02, n)}
        if not base:
            out["harm_change"] = _m(h, hw, n)
            out["win_rate"] = _m(w, hw, n)
        return out

    per = {lang: block(harm + spread * (i - 2.5) / 2.5, win - spread * (i - 2.5) / 5, lang_half, 40)
           for i, lang in enumerate(LANGS)}
    return {"overall": block(harm, win, half, 240), "per_lang": per}


SPEC = default_spec()


def make_results() -> dict:
    """A finished default-like study. Designed so that: at SFT, TIES is clearly safer than the 15 % mix while
    Linear's and SLERP's harm CIs overlap the mix's, and the best-scoring Linear/SLERP weight is w = 1 (the safety
    expert itself); at DPO, SLERP clearly beats the mix on both axes; many models sit close together in the
    trade-off plot (several exactly on the same spot)."""
    models: dict[str, dict] = {}

    def add(name: str, ev: dict | None, path: str | None = None) -> None:
        rec = ModelEntry.of(SPEC.model_id(name), path or f"train/abc/{name}").as_dict()
        models[name] = {**rec, "eval": ev, "eval_seconds": 1.5}

    add("base", _eval(0.0, 0.5, base=True), "world/base")
    for stage in ("sft", "dpo"):
        add(f"mix0_{stage}", _eval(0.0, 0.60, spread=0.05))
        add(f"mix15_{stage}", _eval(-0.40, 0.55, spread=0.05))
        add(f"mix100_{stage}", _eval(-0.62 if stage == "sft" else -0.9, 0.56 if stage == "sft" else 0.52))
    for lang in LANGS:
        add(f"mono_{lang}_sft", _eval(-0.1, 0.56, spread=0.02))
    curves = {  # method -> {w: (harm change, win-rate)}
        "linear": {0.3: (-0.30, 0.56), 0.5: (-0.42, 0.55), 0.7: (-0.43, 0.555)},
        "slerp": {0.3: (-0.31, 0.56), 0.5: (-0.41, 0.555), 0.7: (-0.44, 0.55)},
        "ties": {0.0: (-0.02, 0.59), 0.3: (-0.35, 0.57), 0.5: (-0.58, 0.56), 0.7: (-0.60, 0.55), 1.0: (-0.61, 0.54)},
        "dare_ties": {0.3: (-0.33, 0.565), 0.5: (-0.41, 0.553), 0.7: (-0.45, 0.551)},
    }
    for stage in ("sft", "dpo"):
        for method, pts in curves.items():
            grid = dict(pts)
            for w in (0.0, 1.0):
                grid.setdefault(w, None)
            for w in sorted(grid):
                name = f"{method}_w{w:g}_{stage}"
                if method in ("linear", "slerp") and w in (0.0, 1.0):  # aliases: the expert's own model dir
                    expert = f"mix{100 if w == 1.0 else 0}_{stage}"
                    add(name, models[expert]["eval"], models[expert]["path"])
                    continue
                h, win = grid[w] if grid[w] is not None else ((-0.05, 0.58) if w == 0.0 else (-0.6, 0.545))
                if stage == "dpo":
                    h, win = h - 0.25 if method != "slerp" else -0.85, win + (0.10 if method == "slerp" else 0.0)
                add(name, _eval(h, win, half=0.04, spread=0.1), f"merges/{name}")
    add("merge_dpo_slerp_w0.5", _eval(-0.7, 0.6, half=0.05, spread=0.05))
    add("lang_ties_en+fr+es_sft", _eval(-0.12, 0.57, spread=0.1), "merges/lang_ties_en+fr+es_sft")
    add("search_aware_ties_sft", _eval(-0.5, 0.56, spread=0.05), "search/aware")
    add("search_unaware_ties_sft", _eval(-0.1, 0.58, spread=0.05), "search/unaware")
    selections = []  # what the study records: here the val numbers are the test numbers (one fake evaluation)
    for stage in ("sft", "dpo"):
        for method in curves:
            grid = {n: m["weight"] for n, m in models.items()
                    if m["group"] == "objective_merge" and m["method"] == method and m["stage"] == stage}
            best = max(grid, key=lambda n: (score({"summary": models[n]["eval"]}), -abs(grid[n] - 0.5)))
            selections.append({"key": f"weight:{method}:{stage}", "what": f"merge weight of {method} at {stage}",
                               "model": best, "weight": grid[best], "split": "val", "by": SCORE})
            models[best]["selected_on"] = "val"
    return {"name": "layout", "languages": list(LANGS), "seed": 0,
            "eval": {"suite": "world", "judge": "rules", "limit": 40},
            "splits": {"report": "test", "select": "val"}, "selections": selections,
            "models": models,
            "stages": [{"stage": "world + base eval", "wall_seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0,
                        "computed": 1, "cached": 0, "skipped": 0}],
            "notes": [], "unit_seconds": {}, "wall_seconds": 10.0,
            "env": environment(["safemerge", "study", "--preset", "default", "--out", "study-default"])}


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads(json.dumps(make_results()))  # exactly what results.json would hold


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    (out / "results.json").write_text(json.dumps(results))
    write_report(results, out)
    return out


# ----------------------------------------------------------------------------------------------- 5. findings
CLAIM = re.compile(r"(?P<a>[-+]?\d+\.\d) % \[(?P<alo>-?\d+\.\d), (?P<ahi>-?\d+\.\d)\] vs (?P<b>[-+]?\d+\.\d) % "
                   r"\[(?P<blo>-?\d+\.\d), (?P<bhi>-?\d+\.\d)\]: (?P<verdict>clearly [a-z ]+?|no clear difference) "
                   r"\((?P<ci>95 % CIs (?:do not )?overlap)\)")


def test_every_claim_states_whether_the_cis_overlap(results):
    found = findings(results)
    claims = [f for title, items in found.groups if title != "Notes" for f in items]
    assert len(claims) >= 8
    for claim in claims:
        assert re.search(r"95 % CIs?\b", claim), claim
    # every A-vs-B comparison: "clearly ..." exactly when the printed CIs do not overlap, else "no clear difference"
    pairs = [m for claim in claims for m in CLAIM.finditer(claim)]
    assert len(pairs) >= 10
    verdicts = set()
    for m in pairs:
        alo, ahi, blo, bhi = (float(m[k]) for k in ("alo", "ahi", "blo", "bhi"))
        overlap = not (ahi < blo or bhi < alo)
        verdicts.add(m["verdict"])
        if overlap:
            assert m["verdict"] == "no clear difference" and m["ci"] == "95 % CIs overlap", m[0]
        else:
            assert m["verdict"].startswith("clearly ") and m["ci"] == "95 % CIs do not overlap", m[0]
    assert "no clear difference" in verdicts and "clearly safer" in verdicts  # both kinds occur in the fixture


def test_overlapping_comparisons_are_worded_no_clear_difference(results):
    found = findings(results)
    sft = dict(found.groups)["SFT"]
    linear = next(f for f in sft if f.startswith("safety expert (= Linear w=1) vs the 15 % mixture"))
    # its harm CI [-67, -57] and the mix's [-45, -35] do not overlap; its win-rate CI overlaps the mix's
    assert "harm change -62.0 % [-67.0, -57.0] vs -40.0 % [-45.0, -35.0]: clearly safer" in linear
    assert "win-rate 56.0 % [51.0, 61.0] vs 55.0 % [50.0, 60.0]: no clear difference (95 % CIs overlap)" in linear
    # nothing at SFT is called a win on both axes: the point-estimate lead is reported as no clear difference
    assert not any("beat mixing on BOTH axes" in f for f in sft)
    dpo = dict(found.groups)["DPO"]
    assert any(f.startswith("Merging beat mixing on BOTH axes at DPO, with non-overlapping 95 % CIs: SLERP")
               for f in dpo), dpo
    # comparisons with the base: the CI against 0 / 50 %
    timing = dict(found.groups)["Merge timing"]
    assert "harm change clearly below the base (95 % CI excludes 0)" in timing[0]


def test_summary_is_three_lines_and_findings_are_grouped(results, report):
    found = findings(results)
    assert len(found.summary) == 3
    assert found.summary[0].startswith("SFT: no merge clearly beats the 15 % data mixture on both axes")
    assert found.summary[1].startswith("DPO: merging clearly beats the 15 % data mixture")
    assert "SLERP" in found.summary[1]
    assert found.summary[2].startswith("Evidence: ")
    titles = [t for t, _ in found.groups]
    assert titles == ["Overall", "SFT", "DPO", "Merge timing", "Language merges", "Search"]
    md = (report / "report.md").read_text()
    assert md.index("## Summary") < md.index("## Findings") < md.index("### SFT") < md.index("### DPO") \
        < md.index("### Language merges") < md.index("### Search") < md.index("## Main tables")


# ----------------------------------------------------------------------------------------------- 6. labels
def test_row_labels_are_clean_and_endpoints_are_the_experts(results, report):
    tables = build_tables(results)
    main = tables["harm_change"]
    labels = [lab for lab, _ in main.rows]
    titles = set(main.block_titles.values())
    assert {"SFT", "DPO", "Merge timing", "Language merges", "Search"} <= titles
    for lab in labels:
        assert not any(lab.startswith(f"{t}:") or lab.startswith(f"{t},") for t in titles), lab
        assert "Merge timing, language merges, search" not in lab
    assert "TIES of en+fr+es (SFT)" in labels and "SFT -> SLERP (w=0.5) -> DPO" in labels
    # Linear's best weight at SFT is w = 1: shown as the safety expert, not as a merge
    assert "safety expert (= Linear w=1)" in labels and "Linear (w=1)" not in labels
    # sweeps: w = 0 / 1 of Linear and SLERP named as the experts; TIES w = 1 is a merge (trimmed delta)
    sweep = [(main_t, lab) for main_t, lab in
             ((tables["sweep"].block_titles[tables["sweep"].block_of(i)], lab)
              for i, (lab, _) in enumerate(tables["sweep"].rows))]
    assert ("SFT, Linear", "w=0 = general expert") in sweep and ("DPO, SLERP", "w=1 = safety expert") in sweep
    assert ("SFT, TIES", "w=1") in sweep
    # the all-models table lists each expert once, saying which merges are the same model
    all_labels = [lab for lab, _ in tables["all"].rows]
    assert not any(lab.startswith("Linear (w=1)") or lab.startswith("SLERP (w=0)") for lab in all_labels)
    assert "safety expert (100 % mix) (SFT); = Linear w=1, SLERP w=1" in all_labels
    page = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    for text in (page, md):
        assert "Merge timing, language merges, search:" not in text
    assert "| SFT: 15 % mix |" in md and "| DPO: SLERP (w=0.3) |" in md


def test_place_labels_never_overlaps():
    # 30 labels on 6 nearly coincident spots and a tight cluster: all placed, pairwise disjoint, inside the box
    anchors = [(200 + 3 * (i % 6), 150 + 2 * (i // 6)) for i in range(30)]
    sizes = [(14 + 4 * (i % 3), 9) for i in range(30)]
    bounds = (0, 0, 500, 400)
    where = place_labels(anchors, sizes, bounds, [(x - 4, y - 4, x + 4, y + 4) for x, y in anchors])
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(where, sizes)]
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert all(bounds[0] <= b[0] and b[2] <= bounds[2] and bounds[1] <= b[1] and b[3] <= bounds[3] for b in boxes)


def test_tradeoff_plot_labels_do_not_overlap(results):
    fig, texts, key = tradeoff_figure(results)
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0].get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert len(boxes) >= 10
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    for b in boxes:
        assert ax.x0 <= b.x0 and b.x1 <= ax.x1 and ax.y0 <= b.y0 and b.y1 <= ax.y1
    keyb = [t.get_window_extent(renderer) for t in key]
    for a, b in itertools.combinations(keyb, 2):
        assert not a.overlaps(b)
    assert all(b.x0 >= ax.x1 and b.x1 <= fig.bbox.x1 and b.y0 >= 0 for b in keyb)  # beside the plot, inside it
    # every number has a key entry, the aliases of the experts are not repeated
    numbers = {int(x) for t in texts for x in t.get_text().split(",")}
    assert numbers == set(range(1, len(key) + 1))
    assert not any("Linear (w=1)" in t.get_text() for t in key)


# ----------------------------------------------------------------------------------------------- 7. browser
PROBE = """<script>(function(){
var d=document.documentElement, r={innerWidth:innerWidth, scrollWidth:d.scrollWidth, tables:[]};
document.querySelectorAll('table.results').forEach(function(t){var b=t.getBoundingClientRect();
 r.tables.push({id:t.id, right:b.right, scrollWidth:t.parentNode.scrollWidth, clientWidth:t.parentNode.clientWidth});});
var p=document.createElement('pre'); p.id='layout-probe'; p.textContent=JSON.stringify(r); document.body.appendChild(p);
})();</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def check_layout(page: Path, tmp: Path, shot: Path) -> dict:
    """Open the report at 1280 px in headless Chromium: no horizontal overflow of the page, every results table
    inside the window and not scrolled inside its box; a screenshot of the top of the page saved to ``shot``."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    flags = [*FLAGS, f"--user-data-dir={tmp / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--window-size=1280,900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S)
    assert m, dom.stdout[-2000:]
    import html

    r = json.loads(html.unescape(m.group(1)))
    assert r["innerWidth"] == 1280, r
    assert r["scrollWidth"] <= r["innerWidth"], r  # no horizontal overflow of the page
    ids = {t["id"] for t in r["tables"]}
    assert {"table-harm-change", "table-win-rate", "table-sweep", "table-all"} <= ids
    for t in r["tables"]:
        assert t["right"] <= r["innerWidth"] and t["scrollWidth"] <= t["clientWidth"], t  # the table fits
    shot.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([CHROMIUM, *flags, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1280
    return r


def test_html_has_summary_grouped_findings_and_all_column_first(report):
    page = (report / "report.html").read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.S)
    assert summary and summary.group(1).count("<p>") == 3
    assert page.index('id="summary"') < page.index('id="findings"') < page.index('id="table-harm-change"')
    found = re.search(r'<div id="findings">(.*?)</div>', page, re.S).group(1)
    assert re.findall(r"<h3>(.*?)</h3>", found) == ["Overall", "SFT", "DPO", "Merge timing", "Language merges",
                                                      "Search"]
    table = re.search(r'<table id="table-harm-change".*?</table>', page, re.S).group(0)
    heads = re.findall(r"<th[^>]*>(.*?)</th>", re.search(r"<thead>(.*?)</thead>", table, re.S).group(1))
    assert heads == ["method", "all", *LANGS]  # the overall column first
    assert re.search(r'<tr class="block"><th colspan="8">SFT</th></tr>', table)
    assert re.search(r'<td class="all[^"]*">-?\d+\.\d<span class="ci">\[-?\d+\.\d, -?\d+\.\d\]</span></td>', table)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_fits_1280px_in_chromium(report, tmp_path):
    check_layout(report / "report.html", tmp_path, tmp_path / "report.png")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_layout_check_fails_on_a_wide_table(report, tmp_path):
    """The check can fail: the same page with its CSS made to keep every cell on one line overflows."""
    page = (report / "report.html").read_text()
    wide = tmp_path / "wide.html"
    wide.write_text(page.replace("</style>", ".ci{display:inline} th,td,th:first-child,td:first-child"
                                             "{white-space:nowrap;max-width:none} .wrap{overflow:visible}"
                                             " body{max-width:none}</style>")
                    .replace("<title>", "<title>wide ")
                    .replace('class="results"', 'class="results" style="min-width:1400px"'))
    with pytest.raises(AssertionError):
        check_layout(wide, tmp_path, tmp_path / "wide.png")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_real_smoke_report_fits_1280px_and_docs_screenshot(tmp_path):
    """A real smoke study (or the finished study in $SAFEMERGE_STUDY_OUT): its report fits 1280 px. With
    $SAFEMERGE_STUDY_OUT (e.g. the default study of `make demo`, runs/demo) the screenshot is saved as the docs'
    docs/img/study_report.png; a plain test run writes nothing into the checkout."""
    out = Path(os.environ["SAFEMERGE_STUDY_OUT"]) if os.environ.get("SAFEMERGE_STUDY_OUT") else tmp_path / "run"
    if not (out / "results.json").is_file():
        env = dict(os.environ, SAFEMERGE_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        res = subprocess.run([sys.executable, "-m", "safemerge.cli", "study", "--preset", "smoke", "--out", str(out),
                              "--quiet"], env=env, capture_output=True, text=True, timeout=1800)
        assert res.returncode == 0, res.stderr[-3000:]
    else:
        from safemerge.study.report import rebuild_report

        rebuild_report(out)
    results = json.loads((out / "results.json").read_text())
    assert len(findings(results).summary) == 3
    docs = os.environ.get("SAFEMERGE_STUDY_OUT")
    check_layout(out / "report.html", tmp_path,
                 ROOT / "docs" / "img" / "study_report.png" if docs else tmp_path / "study_report.png")
