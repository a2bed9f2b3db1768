"""`mathrl view`: the page's data, its escaping, and the page as a real headless Chromium renders it."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image

from mathrl.errors import UserError
from mathrl.report import load_runs
from mathrl.viewer import page_data, render_page

HOSTILE = "</script><img src=x onerror=alert(1)> & <b>bold</b>"


def _write_run(root, name, outcomes, bench="arith"):
    """A run folder whose sample for problem p<i> is correct when outcomes[i]."""
    folder = root / name / "eval" / bench
    folder.mkdir(parents=True)
    rows = []
    for i, ok in enumerate(outcomes):
        answer = "7" if ok else "8"
        rows.append({
            "benchmark": bench, "problem_id": f"p{i}", "sample_index": 0,
            "problem": f"What is 3 + 4? (problem {i}) {HOSTILE if i == 0 else ''}", "gold": "7", "level": 1,
            "response": f"<think>\nstep one of {name} on p{i}\n</think>\n\n"
                        f"The answer is $\\boxed{{{answer}}}$.",
            "extracted": answer, "answer_key": answer, "correct": ok, "finish_reason": "stop",
            "n_tokens": 20 + i, "n_thinking_tokens": 9,
        })
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / name


BASE = [True, False, False, True, False, False]
RL = [True, True, True, False, True, False]  # fixes p1 p2 p4, breaks p3


def test_page_data_splits_thinking_and_stores_each_problem_once(tmp_path):
    runs = [_write_run(tmp_path, "base", BASE), _write_run(tmp_path, "rl", RL)]
    data = page_data(load_runs(runs))
    assert data["runs"] == ["base", "rl"] and data["benchmarks"] == ["arith"]
    assert len(data["problems"]["arith"]) == 6 and len(data["samples"]) == 12
    first = data["samples"][0]
    assert first["thinking"] == "\nstep one of base on p0\n"
    assert first["answer"] == "\n\nThe answer is $\\boxed{7}$."
    assert (first["extracted"], first["correct"], first["tokens"]) == ("7", True, 20)
    (tmp_path / "again").mkdir()
    with pytest.raises(UserError, match="distinct names"):
        page_data(load_runs([runs[0], _write_run(tmp_path / "again", "base", BASE)]))


def test_the_page_embeds_the_data_safely(tmp_path):
    data = page_data(load_runs([_write_run(tmp_path, "base", BASE)]))
    page = render_page(data, "runs <x>")
    payload = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in payload  # nothing in a response can end the script element early
    assert json.loads(payload) == data
    assert "<title>runs &lt;x&gt;</title>" in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched


def test_view_command_writes_the_page(tmp_path):
    runs = [_write_run(tmp_path, "base", BASE), _write_run(tmp_path, "rl", RL)]
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", "view", *map(str, runs), "--out",
                          str(tmp_path / "v.html")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "12 samples of 2 run(s)" in out.stdout
    assert "step one of rl on p4" in (tmp_path / "v.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "mathrl.cli", "view", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no eval/ folder" in bad.stderr


# ---- in a real browser ---------------------------------------------------------------------------

CHROMIUM = os.environ.get("MATHRL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("MATHRL_REQUIRE_CHROMIUM"):
    raise RuntimeError("MATHRL_REQUIRE_CHROMIUM is set but no chromium is on PATH")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
# Headless, and quiet on a machine without a network (see the env notes on Chromium).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]


def _chromium(tmp_path, *args):
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class _Cards(HTMLParser):
    """Collects the text of each rendered card and of the #count element."""

    def __init__(self):
        super().__init__()
        self.cards, self.count, self._depth, self._in_count = [], "", 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self._depth:
            self._depth += tag == "div"
        elif tag == "div" and attrs.get("class") == "card":
            self.cards.append("")
            self._depth = 1
        self._in_count = attrs.get("id") == "count"

    def handle_endtag(self, tag):
        if self._depth and tag == "div":
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.cards[-1] += data
        if self._in_count:
            self.count += data
            self._in_count = False


def _rendered(tmp_path, page, fragment):
    parser = _Cards()
    parser.feed(_chromium(tmp_path, "--dump-dom", f"file://{page}#{fragment}"))
    return parser


@pytest.fixture
def page(tmp_path):
    runs = [_write_run(tmp_path, "base", BASE), _write_run(tmp_path, "rl", RL)]
    path = tmp_path / "view.html"
    path.write_text(render_page(page_data(load_runs(runs)), "test runs"))
    return path


@needs_chromium
@pytest.mark.slow
def test_filters_and_compare_view_in_chromium(tmp_path, page):
    wrong = _rendered(tmp_path, page, "view=list&run=base&correct=no")
    assert wrong.count == "4 of 4 samples"
    assert sorted(re.search(r"arith(p\d)", c).group(1) for c in wrong.cards) == ["p1", "p2", "p4", "p5"]
    b_only = _rendered(tmp_path, page, "view=compare&a=base&b=rl&diff=b_only")
    assert b_only.count == "3 of 3 problems"
    for card in b_only.cards:  # both sides of the same problem, each with its own answer
        assert "base: 0% correct" in card and "rl: 100% correct" in card
        assert "step one of base" in card and "step one of rl" in card
    a_only = _rendered(tmp_path, page, "view=compare&a=base&b=rl&diff=a_only")
    assert a_only.count == "1 of 1 problems" and "(problem 3)" in a_only.cards[0]
    # Hostile text shows as text: the page did not run it or cut off at it.
    everything = _rendered(tmp_path, page, "view=list")
    assert everything.count == "12 of 12 samples"
    assert HOSTILE in everything.cards[0]
    searched = _rendered(tmp_path, page, "view=list&q=problem%205")
    assert searched.count == "2 of 2 samples"


@needs_chromium
@pytest.mark.slow
def test_screenshot_shows_the_rendered_page(tmp_path, page):
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,900", f"--screenshot={shot}",
              f"file://{page}#view=compare&a=base&b=rl")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 900)
    colors = {c for _, c in image.getcolors(maxcolors=1 << 22)}
    # The green "correct" and red "wrong" badges drawn by the page's script (CSS --ok, --bad).
    assert (0x1A, 0x7F, 0x37) in colors and (0xCF, 0x22, 0x2E) in colors
    # And text: many dark pixels, not a blank or error page.
    dark = sum(count for count, c in image.getcolors(maxcolors=1 << 22) if sum(c) < 200)
    assert dark > 2000
