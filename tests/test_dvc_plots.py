"""`dvc plots show` draws offline and right: the HTML template inlines the vendored Vega scripts, the curve
templates keep the data's point order, and declared plot folders a task does not write raise no warning.

The drawing checks run the vendored Vega in Node (headless, no browser) on specs that DVC's own renderer
fills from our templates; they are skipped where `node` is not installed.
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dermdl.plot_folders import KEEP, PLOT_FOLDERS, keep_plot_folders

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / ".dvc" / "plots"
VENDOR = ROOT / "plots-template" / "vendor"
PAGE = TEMPLATES / "page.html"
SIZE = 300  # the curve templates' plot width and height in pixels
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed: cannot run Vega headless")


def _build_module():
    spec = importlib.util.spec_from_file_location("plots_template_build", ROOT / "plots-template" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dvc_yaml_plots() -> dict[str, dict]:
    entries = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    out = {}
    for entry in entries:
        key, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        out[key.removeprefix("${out_dir}/plots/")] = props or {}
    return out


def _filled(template: str, points: list[dict], x: str, y: str) -> dict:
    """The Vega-Lite spec DVC's renderer makes from one plot file of one revision."""
    from dvc_render import VegaRenderer

    rows = [{**p, "rev": "workspace", "filename": "plot.json", "field": y} for p in points]
    renderer = VegaRenderer(
        rows, "plot", template=template, template_dir=str(TEMPLATES), x=x, y=y,
        anchors_y_definitions=[{"filename": "plot.json", "field": y}],
    )  # fmt: skip
    return renderer.get_filled_template()


def _lines(spec: dict) -> list[list[list[float]]]:
    """Pixel points of every line mark, in drawing order (tests/vega_lines.js)."""
    result = subprocess.run(
        [NODE or "node", str(ROOT / "tests" / "vega_lines.js"), str(VENDOR)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", ["roc", "pr", "calibration", "subgroups"])
def test_template_is_vega_lite_with_the_dvc_anchors(name):
    text = (TEMPLATES / f"{name}.json").read_text()
    spec = json.loads(text)
    assert spec["$schema"].endswith("/vega-lite/v5.json")
    for anchor in ("<DVC_METRIC_DATA>", "<DVC_METRIC_X>", "<DVC_METRIC_Y>", "<DVC_METRIC_TITLE>"):
        assert anchor in text, anchor


def test_dvc_yaml_declares_every_plot_folder_with_an_existing_template():
    plots = _dvc_yaml_plots()
    assert tuple(plots) == PLOT_FOLDERS  # analyze keeps exactly the folders dvc.yaml declares
    builtin = {"confusion"}
    for folder, props in plots.items():
        template = props.get("template")
        if folder == "figures":
            assert template is None  # PNGs
        else:
            assert template in builtin or (TEMPLATES / f"{template}.json").is_file(), folder


@pytest.mark.parametrize(
    ("folder", "x_title", "y_title"),
    [
        ("roc", "1 - specificity (false positive rate)", "Sensitivity (true positive rate)"),
        ("pr", "Recall (share of lesions found)", "Precision (share of detections that are lesions)"),
        ("calibration", "Predicted probability (mean confidence)", "Observed frequency (share correct)"),
    ],
)
def test_curve_axes_have_clinical_titles(folder, x_title, y_title):
    props = _dvc_yaml_plots()[folder]
    spec = _filled(props["template"], [{props["x"]: 0.2, props["y"]: 0.4, "count": 3}], props["x"], props["y"])
    curve = next(layer for layer in spec["layer"] if "order" in layer["encoding"])
    assert curve["encoding"]["x"]["title"] == x_title
    assert curve["encoding"]["y"]["title"] == y_title
    assert curve["encoding"]["x"]["field"] == props["x"] and curve["encoding"]["y"]["field"] == props["y"]


# Points deliberately not sorted by x, and a ROC whose first points share fpr = 0 (a perfect classifier):
# a template that sorts by x, or smooths, draws other segments than these.
UNSORTED = [(0.5, 0.5), (0.1, 0.2), (0.9, 0.8), (0.3, 0.9)]
PERFECT_ROC = [(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (1.0, 1.0)]


@needs_node
@pytest.mark.parametrize("points", [UNSORTED, PERFECT_ROC], ids=["unsorted", "perfect_roc"])
@pytest.mark.parametrize("folder", ["roc", "pr", "calibration"])
def test_curve_is_drawn_through_the_points_in_file_order(folder, points):
    props = _dvc_yaml_plots()[folder]
    data = [{props["x"]: x, props["y"]: y, "count": 5} for x, y in points]
    lines = _lines(_filled(props["template"], data, props["x"], props["y"]))
    curves = [line for line in lines if len(line) == len(points)]
    assert len(curves) == 1, lines
    # axes run 0..1 over SIZE pixels; y grows downwards
    expected = [[x * SIZE, (1 - y) * SIZE] for x, y in points]
    assert sum(curves[0], []) == pytest.approx(sum(expected, []))


@needs_node
def test_dvc_default_templates_do_not_keep_the_order():
    """The check above can fail: DVC's `simple` template sorts by x, its default `linear` one smooths."""
    data = [{"fpr": x, "tpr": y} for x, y in UNSORTED]
    for template in ("simple", "linear"):
        lines = _lines(_filled(template, data, "fpr", "tpr"))
        first = [point for line in lines for point in line[:1]]
        assert all(p != pytest.approx([0.5 * SIZE, 0.5 * SIZE], abs=1.0) for p in first), template


@needs_node
def test_subgroup_dot_plot_renders():
    rows = [
        {"subgroup": s, "metric": m, "value": v, "lo": v - 0.1, "hi": min(v + 0.1, 1.0), "n": 20}
        for s, v in (("face", 0.7), ("trunk", 0.9))
        for m in ("auc", "sensitivity")
    ] + [{"subgroup": "scalp", "metric": "auc", "value": None, "lo": None, "hi": None, "n": 2}]
    _lines(_filled("subgroups", rows, "value", "subgroup"))  # raises when Vega cannot compile or run it


def test_html_template_is_built_from_the_vendored_scripts():
    assert PAGE.read_text(encoding="utf-8") == _build_module().build(), "run: python plots-template/build.py"
    for name in ("vega", "vega-lite", "vega-embed"):
        assert (VENDOR / f"{name}.min.js").stat().st_size > 10_000, name
        assert (
            "BSD" in (VENDOR / f"LICENSE-{name}").read_text()
            or "Redistribution" in (VENDOR / f"LICENSE-{name}").read_text()
        )
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"html_template\s*=\s*plots/page\.html", config)


def test_html_template_loads_nothing_from_the_network():
    page = PAGE.read_text(encoding="utf-8")
    markup = re.sub(r"<script>.*?</script>", "<script></script>", page, flags=re.DOTALL)
    assert markup.count("<script></script>") == 4  # vega, vega-lite, vega-embed, the embed options
    assert not re.search(r"https?://", markup), "the page markup names a URL"
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=", markup)
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's {scripts} are CDN <script src=...>


def test_dvc_render_page_has_only_inline_scripts(tmp_path):
    from dvc_render import VegaRenderer
    from dvc_render.html import render_html

    rows = [{"fpr": 0.0, "tpr": 0.0, "rev": "workspace"}, {"fpr": 1.0, "tpr": 1.0, "rev": "workspace"}]
    renderer = VegaRenderer(rows, "roc", template="roc", template_dir=str(TEMPLATES), x="fpr", y="tpr")
    out = Path(render_html([renderer], tmp_path / "index.html", html_template=str(PAGE)))
    html = out.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and not re.search(r"<script[^>]*\bsrc=", html)
    assert "vegaEmbed('#roc'" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def drawn_plots(page: Path) -> tuple[int, int]:
    """(plots on the page, plots Vega drew) in headless Chromium with every host name unresolvable."""
    dom = subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return page.read_text(encoding="utf-8").count("vegaEmbed('#"), dom.count("<canvas")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_every_template_draws_offline_in_chromium(tmp_path):
    from dvc_render import VegaRenderer
    from dvc_render.html import render_html

    renderers = []
    for folder, props in _dvc_yaml_plots().items():
        if folder == "figures":
            continue
        x, y = props["x"], props["y"]
        if folder == "subgroups":
            rows = [{x: 0.8, y: "face", "metric": "auc", "lo": 0.7, "hi": 0.9, "n": 9}]
        elif folder == "confusion":
            rows = [{x: "nevus", y: "melanoma"}, {x: "nevus", y: "nevus"}]
        else:
            rows = [{x: 0.0, y: 0.0, "count": 4}, {x: 0.5, y: 0.9, "count": 4}, {x: 1.0, y: 1.0, "count": 4}]
        rows = [{**row, "rev": "workspace"} for row in rows]
        renderers.append(VegaRenderer(rows, folder, template=props["template"], template_dir=str(TEMPLATES), x=x, y=y))
    page = Path(render_html(renderers, tmp_path / "index.html", html_template=str(PAGE)))
    assert drawn_plots(page) == (5, 5)


def test_keep_plot_folders_fills_only_what_the_task_left_empty(tmp_path):
    (tmp_path / "roc").mkdir()
    (tmp_path / "roc" / "t--melanoma.json").write_text("[]")
    (tmp_path / "pr").mkdir()  # an empty folder counts as not written
    kept = keep_plot_folders(tmp_path)
    assert kept == [name for name in PLOT_FOLDERS if name != "roc"]
    assert not (tmp_path / "roc" / KEEP).exists()
    assert all((tmp_path / name / KEEP).is_file() for name in kept)
    assert keep_plot_folders(tmp_path) == kept  # idempotent


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc), *args], cwd=cwd, capture_output=True, text=True, check=True)


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "missing"])
def test_dvc_plots_show_warns_only_for_a_missing_folder(tmp_path, keep):
    """A real DVC project with the repository's .dvcignore: a kept folder is silent, a missing one warns."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(["init", "-q"], tmp_path)
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    plots = tmp_path / "outputs" / "plots"
    (plots / "roc").mkdir(parents=True)
    (plots / "roc" / "t--melanoma.json").write_text(json.dumps([{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}]))
    if keep:
        keep_plot_folders(plots)
    definitions = [
        {"outputs/plots/roc": {"x": "fpr", "y": "tpr"}},
        {"outputs/plots/pr": {"x": "recall", "y": "precision"}},
    ]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": definitions}))
    shown = _dvc(["plots", "show", "-o", "html"], tmp_path)
    assert ("failed to load" in shown.stdout + shown.stderr) is not keep
    assert (tmp_path / "html" / "index.html").is_file()
