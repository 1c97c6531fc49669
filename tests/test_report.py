"""Pictures: overlay legends, legend.png / classes.json, and the HTML reports of `predict --report` and
`evaluate --report`, loaded from disk in a real headless Chromium (the system's, driven by Selenium).

The browser tests need `chromium` and `chromedriver` (Debian: apt install chromium chromium-driver; .ci/run
installs them). Without them they are skipped — unless SEGCLI_REQUIRE_BROWSER=1 (CI), where that fails.
Screenshots are kept in $SEGCLI_ARTIFACTS (default: test-artifacts/ in the checkout).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli.io.legend import legend_panel
from segcli.loading.classes import known_set
from segcli.report import gallery
from segcli.report.scores import confusions

pytest.importorskip("jinja2", reason="jinja2 is not installed (the [report] extra)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (the [report] extra)")

ARTIFACTS = Path(os.environ.get("SEGCLI_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))
ODD_NAMES = ("<script>alert(1)<!--.png", "<img src=x onerror=window.pwned=1>.png", 'a&amp;b "q".png')


def _images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        blocks = rng.integers(0, 255, (4, 5 + i % 2, 3), dtype=np.uint8)
        Image.fromarray(np.kron(blocks, np.ones((24, 24, 1), dtype=np.uint8))).save(folder / name)


# ------------------------------------------------------------------ legends (no browser)


def test_legend_panel_shows_the_colours_of_the_classes_present_only():
    ade = known_set("ade20k")
    labels = np.full((40, 60), 4, dtype=np.uint8)  # tree
    labels[:, 20:] = 12  # person
    labels[:10, :] = 2  # sky
    panel = np.asarray(legend_panel(labels, ade, 600))
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    assert {tuple(ade.palette[i]) for i in (2, 4, 12)} <= colours
    absent = [tuple(c) for i, c in enumerate(ade.palette) if i not in (2, 4, 12) and len(set(c)) > 1]  # not grey
    assert not set(absent) & colours  # (greys would match the antialiased text)
    without_sky = {tuple(c) for c in np.asarray(legend_panel(labels, ade, 600, background=2)).reshape(-1, 3)}
    assert tuple(ade.palette[2]) not in without_sky and tuple(ade.palette[12]) in without_sky


def test_legend_shares_are_of_the_whole_image_also_for_parts():
    from segcli.io.legend import legend_entries
    from segcli.loading.classes import ClassSet

    parts = ClassSet("custom", ("background", "wheel", "door"), ((0, 0, 0), (10, 20, 30), (40, 50, 60)))
    labels = np.zeros((10, 10), np.uint8)  # half the image no part at all
    labels[:5, :3] = 1
    labels[:5, 3:] = 2
    assert [t for t, _ in legend_entries(labels, parts, background=0)] == ["door  35.0%", "wheel  15.0%"]


def test_overlays_carry_a_legend_and_every_run_writes_the_palette(cli, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "in", ["a.png"])
    r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--save", "overlay", "--quiet")
    assert r.exit_code == 0, r.stderr
    overlay = Image.open(tmp_path / "out" / "a_overlay.jpg")
    assert overlay.width == 480 and overlay.height > 96  # the legend is drawn under the 96×120 image
    doc = json.loads((tmp_path / "out" / "classes.json").read_text())
    ade = known_set("ade20k")
    assert [c["name"] for c in doc["classes"]] == list(ade.classes)
    assert doc["classes"][12]["color"] == "#{:02x}{:02x}{:02x}".format(*ade.palette[12])
    legend = np.asarray(Image.open(tmp_path / "out" / "legend.png").convert("RGB"))
    assert {tuple(c) for c in ade.palette} <= {tuple(c) for c in legend.reshape(-1, 3)}  # every class's swatch
    r = cli(
        "predict",
        tmp_path / "in",
        "-m",
        tiny_convnext_dir,
        "-o",
        tmp_path / "plain",
        "--save",
        "overlay",
        "--no-legend",
    )
    assert r.exit_code == 0 and Image.open(tmp_path / "plain" / "a_overlay.jpg").size == (120, 96)


def test_report_parameters_read_as_words():
    assert [gallery._text(v) for v in (None, True, False, [512, 512], {"a": None, "b": 1.5}, "x")] == [
        "none", "yes", "no", "512, 512", "a: none; b: 1.5", "x"
    ]  # fmt: skip


def test_top_confusions_are_ranked_by_pixels():
    m = np.array([[50, 10, 0], [30, 60, 5], [0, 1, 3]])
    top = confusions(m, ["a", "b", "c"])
    assert [(c["gt"], c["pred"], c["pixels"]) for c in top] == [
        ("b", "a", 30),
        ("a", "b", 10),
        ("b", "c", 5),
        ("c", "b", 1),
    ]
    assert top[0]["share"] == pytest.approx(30 / 95)


def test_report_needs_a_whole_run(cli, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "in", ["a.png"])
    r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--report", "--shard", "0/2")
    assert r.exit_code == 2 and "--shard" in r.stderr
    r = cli(
        "evaluate",
        "--pred",
        tmp_path / "in",
        "--gt",
        tmp_path / "in",
        "--num-classes",
        "3",
        "--report",
        tmp_path / "r.txt",
    )
    assert r.exit_code == 2 and ".html" in r.stderr


def test_report_time_says_where_a_run_went():
    summary = {
        "counts": {"done": 12, "skipped": 0},
        "wall_seconds": 2297.0,
        "setup_seconds": {"load_model": 3.0, "choose_backend": 1734.0},
        "seconds": 560.0,
        "images_per_second": 12 / 560,
    }
    assert gallery.time_text(summary) == (
        "38 min 17 s in all (loading the model 3.0 s, choosing the backend 28 min 54 s, segmenting 9 min 20 s); "
        "12 images segmented in this run, 0.02 images/s"
    )
    rerun = {**summary, "counts": {"done": 0, "skipped": 12}, "wall_seconds": 1.25, "seconds": 0.1}
    rerun["setup_seconds"] = {"load_model": 1.0, "choose_backend": 0.0}
    assert gallery.time_text(rerun) == (
        "1.2 s in all (loading the model 1.0 s, segmenting 0.1 s); no image segmented in this run; "
        "12 done before (skipped)"
    )
    assert gallery.duration(7530) == "2 h 05 min"


def _input_links(page: Path) -> list[str]:
    import re

    html = page.read_text()
    return re.findall(r'<a href="([^"]+)"><img src="[^"]+" alt="image', html)


def test_report_links_to_the_photos_survive_moving_the_folder(cli, tiny_convnext_dir, tmp_path):
    from urllib.parse import unquote, urlparse

    _images(tmp_path / "in", ["a b.png", "c.png"])
    sources = {p.read_bytes() for p in (tmp_path / "in").iterdir()}
    for how in ("absolute", "copy"):
        out = tmp_path / f"out-{how}"
        args = ("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out, "--report", "--quiet")
        assert cli(*args, "--report-inputs", how).exit_code == 0
        moved = tmp_path / "elsewhere" / how
        moved.parent.mkdir(exist_ok=True)
        shutil.move(out, moved)
        links = _input_links(moved / "index.html")
        assert len(links) == 2
        if how == "absolute":
            files = [Path(unquote(urlparse(link).path)) for link in links]
            assert all(link.startswith("file:///") for link in links)
        else:
            files = [moved / unquote(link) for link in links]
            assert all(f.parent == moved / gallery.FOLDER / "inputs" for f in files)
        assert {f.read_bytes() for f in files} == sources
    # relative links: the folder and its inputs side by side
    out = tmp_path / "out-relative"
    args = ("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out, "--report", "--quiet")
    assert cli(*args, "--report-inputs", "relative").exit_code == 0
    links = _input_links(out / "index.html")
    assert sorted(links) == ["../in/a%20b.png", "../in/c.png"]
    r = cli(*args, "--report-inputs", "copies")
    assert r.exit_code == 2 and "absolute, relative, copy" in r.stderr


def test_report_time_of_a_rerun_says_nothing_was_segmented(cli, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "in", ["a.png"])
    args = ("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", tmp_path / "out", "--report", "--quiet")
    assert cli(*args).exit_code == 0
    assert "1 image segmented in this run" in (tmp_path / "out" / "index.html").read_text()
    assert cli(*args).exit_code == 0
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert doc["wall_seconds"] >= doc["seconds"] and set(doc["setup_seconds"]) == {"load_model", "choose_backend"}
    html = (tmp_path / "out" / "index.html").read_text()
    assert "no image segmented in this run; 1 done before (skipped)" in html


# ------------------------------------------------------------------ in a browser


def _browser_paths() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


@pytest.fixture(scope="module")
def browser():
    paths = _browser_paths()
    if paths is None:
        if os.environ.get("SEGCLI_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromedriver are required here (SEGCLI_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium + chromedriver (apt install chromium chromium-driver)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (the [test] extra drives the system's Chromium with it)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    yield driver
    driver.quit()


def _check_page(driver) -> None:
    """Every image loaded, no script ran, nothing logged as an error."""
    deadline = time.monotonic() + 10  # images still decoding when the load event fired on a busy machine
    while driver.execute_script("return Array.from(document.images).some(i => !i.complete)"):
        assert time.monotonic() < deadline, "images still loading after 10 s"
        time.sleep(0.1)
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []
    assert driver.execute_script("return document.scripts.length") == 0
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def _screenshot(driver, name: str) -> Path:
    for _ in range(2):  # the page's height at the final window size
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(height + 40, 600), 12000))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    return path


def _cards(driver) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", "#gallery .card .name")]


@pytest.mark.slow
def test_predict_report_in_a_browser(cli, browser, tiny_convnext_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "PAGE_SIZE", 4)
    names = ["img0.png", "img1.png", "img2.png", *ODD_NAMES]
    _images(tmp_path / "in", names)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out, "--report", "--quiet")
    assert r.exit_code == 1  # the broken file
    browser.get((out / "index.html").as_uri())
    assert browser.title.startswith("segcli predict")
    first = _cards(browser)
    assert len(first) == 4
    rows = browser.find_elements("css selector", "#failures tr")
    assert len(rows) == 2 and "broken.jpg" in rows[1].text and "not an image" in rows[1].text
    assert browser.find_elements("css selector", "#class-chart svg")
    parameters = browser.find_element("css selector", "#parameters").text
    assert "preset" in parameters and '"' not in parameters  # words, not Python or JSON values
    assert not {"None", "True", "False"} & set(parameters.split())
    _check_page(browser)
    _screenshot(browser, "report-predict.png")
    browser.find_element("link text", "2").click()
    second = _cards(browser)
    _check_page(browser)
    assert sorted(first + second) == sorted(n.removesuffix(".png") for n in names)  # each once; odd names as text
    # a second run skips everything; its report still shows every image, thumbnails redrawn from the files
    shutil.rmtree(out / gallery.FOLDER / "thumbs")
    r = cli("predict", tmp_path / "in", "-m", tiny_convnext_dir, "-o", out, "--report", "--quiet")
    assert r.exit_code == 1
    browser.get((out / "index.html").as_uri())
    assert len(_cards(browser)) == 4 and len(browser.find_elements("css selector", "#gallery .status-skipped")) == 4
    _check_page(browser)


@pytest.mark.slow
def test_evaluate_report_in_a_browser(cli, browser, tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    expected = np.zeros((5, 5), dtype=np.int64)
    for i in range(4):
        gt = rng.integers(0, 5, (30, 40)).astype(np.uint8)
        pred = np.where(rng.random(gt.shape) < 0.3, (gt + 1) % 5, gt).astype(np.uint8)
        Image.fromarray(gt).save(tmp_path / "gt" / f"{i}.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"{i}.png")
        np.add.at(expected, (gt.ravel(), pred.ravel()), 1)
    names = tmp_path / "names.txt"
    names.write_text("road\n<b>bold</b>\nsky\ntree\ncar\n")
    report = tmp_path / "scores.html"
    r = cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--classes", names, "--report", report)
    assert r.exit_code == 0, r.stderr
    browser.get(report.as_uri())
    _check_page(browser)
    rows = browser.find_elements("css selector", "#confusions tr")[1:]
    off = [(expected[i, j], i, j) for i in range(5) for j in range(5) if i != j and expected[i, j]]
    assert len(rows) == min(20, len(off))
    worst = max(off)
    assert rows[0].text.split()[-1] == str(worst[0])  # the most confused pair's pixel count, ranked first
    for chart in ("iou-chart", "acc-chart", "confusion-chart", "image-chart"):
        assert browser.find_elements("css selector", f"#{chart} svg"), chart
    assert "<b>bold</b>" in browser.find_element("css selector", "#confusions").text  # escaped, shown as text
    assert not browser.find_elements("css selector", "#confusions b")
    assert browser.find_elements("css selector", "#failures-none")
    _screenshot(browser, "report-evaluate.png")


@pytest.mark.slow
def test_training_report_in_a_browser(browser, small_model, tmp_path):
    from test_train import COLOURS, SMALL, dataset

    from segcli.train.fit import fit

    data = dataset(tmp_path / "data", 10)
    classes = tmp_path / "classes.csv"
    names = ["ground", "<b>bold</b>", "green disc", "blue bar"]
    classes.write_text("".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in zip(names, COLOURS, strict=True)))
    run = tmp_path / "run"
    opts = {**SMALL, "report": True}
    fit(data, str(small_model), run, classes=classes, iters=4, val_every=2, val_split=0.4, lr=1e-3, **opts)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [r for r in log if "val_mIoU" in r]
    assert [r["iter"] for r in vals] == [2, 4] and len(vals[-1]["val_IoU"]) == 4
    browser.get((run / "report.html").as_uri())
    _check_page(browser)
    assert browser.title.startswith("segcli train")
    for chart in ("loss-chart", "lr-chart", "val-chart", "per-class-chart"):
        assert browser.find_elements("css selector", f"#{chart} svg"), chart
    cards = browser.find_elements("css selector", "#samples .card")
    assert len(cards) == 4  # the 4 validation images, each: image, label, prediction
    assert all(len(c.find_elements("css selector", "img")) == 3 for c in cards)
    best = max(vals, key=lambda r: r["val_mIoU"])
    assert f"{100 * best['val_mIoU']:.2f}% at iteration {best['iter']}" in browser.find_element("id", "best").text
    # the label thumbnail is drawn in the classes' colours (grey where unlabelled)
    label = np.asarray(Image.open(run / "report" / "sample-0-label.png").convert("RGB"))
    assert {tuple(c) for c in label.reshape(-1, 3)} <= {*map(tuple, COLOURS), (40, 40, 40)}
    assert not browser.find_elements("css selector", "b")  # the class name "<b>bold</b>" is text, never markup
    _screenshot(browser, "report-train.png")


@pytest.mark.slow  # predicts first
def test_evaluate_report_names_the_model_preset_and_backend(cli, tiny_convnext_dir, tmp_path):
    _images(tmp_path / "images", ["a.png", "b.png"])
    (tmp_path / "gt").mkdir()
    for name in ("a", "b"):
        w, h = Image.open(tmp_path / "images" / f"{name}.png").size
        Image.fromarray(np.full((h, w), 3, np.uint8)).save(tmp_path / "gt" / f"{name}.png")
    report = tmp_path / "r.html"
    args = ("-m", tiny_convnext_dir, "--images", tmp_path / "images", "--gt", tmp_path / "gt", "-q")
    r = cli("evaluate", *args, "--report", report, "--json", "-")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    run = report.read_text().split('<table id="run">')[1].split("</table>")[0]
    assert f'<th>model</th><td class="mono">{doc["model"]["name"]}</td>' in run
    assert f"<th>preset</th><td>{doc['preset']}</td>" in run and doc["preset"] == "hf"
    assert f"<th>backend</th><td>{doc['backend']['backend']}</td>" in run
    assert "not kept" in run  # the predictions went to a temporary folder


def test_evaluate_leaves_out_a_run_folders_own_pictures(tmp_path):
    from segcli.evaluation.evaluate import pair

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / folder / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "pred" / "legend.png")
    (tmp_path / "pred" / gallery.FOLDER / "thumbs").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(
        tmp_path / "pred" / gallery.FOLDER / "thumbs" / "k-mask.png"
    )
    (tmp_path / "pred" / "sub").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "pred" / "sub" / "legend.png")  # an image's
    p = pair(tmp_path / "pred", tmp_path / "gt")
    assert [x.key for x in p.pairs] == ["a"] and p.pred_only == [tmp_path / "pred" / "sub" / "legend.png"]


def test_class_names_with_math_markup_are_drawn_as_text():
    """matplotlib reads `$...$` as math (`$\\bad$` is an error there): class names are data, shown as written."""
    from segcli.report import charts

    names = [r"$\bad1$", "a $ b", "plain"]
    svg = charts.bars(names, [0.5, 0.25, 0.1], title=r"IoU of $\x$", xlabel="IoU", percent=True)
    assert "<svg" in svg and r"$\bad1$" in svg and "a $ b" in svg
    heat = charts.heatmap(np.eye(3), names, title="confusions")
    assert r"$\bad1$" in heat
