"""The annotation page in headless Chromium: click, keys, reload, export."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from citylens.analysis.annotations import parse_annotations
from citylens.vocabulary import Vocabulary, ade20k

from .conftest import make_items


@pytest.fixture
def tab(chromium):
    """A fresh browser context (its own local storage) and page; console errors kept."""
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.confirm = False  # a test that expects a confirm() sets it

    def dialog(d):
        if page.confirm and d.type == "confirm":
            d.accept()
        else:
            page.problems.append(f"dialog {d.message}")
            d.dismiss()

    page.on("dialog", dialog)
    yield page
    context.close()


def _where(page) -> str:
    return page.text_content("#where")


def _export(page) -> list[dict]:
    with page.expect_download() as got:
        page.click("#export")
    with open(got.value.path(), encoding="utf-8") as f:
        text = f.read()
    page.exported = text
    return list(csv.DictReader(io.StringIO(text)))


def test_annotate_by_click_and_key_reload_and_export(tab, page_file):
    items = make_items(8)
    names = ade20k().names
    url = page_file(items).as_uri()
    tab.goto(url)
    assert _where(tab).startswith("Explanation 1 of 8")
    # the pictures are there (data: URLs the policy allows)
    loaded = tab.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert loaded
    tab.fill("#annotator", "kim")
    # 1: by click — the second offered class
    tab.click("#offered button:nth-child(2)")
    assert "main: " + names[items[0].offered[1]] in tab.text_content("#picked")
    tab.click("#next")
    # 2: by key — the first and third offered, main first; Enter for next
    tab.locator("body").click(position={"x": 5, "y": 5})
    tab.keyboard.press("1")
    tab.keyboard.press("3")
    tab.keyboard.press("Enter")
    # 3: none / unclear
    tab.keyboard.press("0")
    tab.keyboard.press("Enter")
    # 4: search by a synonym, Enter takes the first match, Esc leaves the box
    tab.keyboard.press("/")
    tab.keyboard.type("edif")
    assert tab.text_content("#results button") == "building (edifice)"
    tab.keyboard.press("Enter")
    tab.keyboard.press("Escape")
    tab.keyboard.press("Enter")
    # 5: pick, go back (Backspace) to 4 and see its answer, then forward again
    tab.keyboard.press("2")
    tab.keyboard.press("Backspace")
    assert _where(tab).startswith("Explanation 4 of 8")
    assert "main: building" in tab.text_content("#picked")
    tab.keyboard.press("Enter")
    tab.keyboard.press("Enter")
    assert _where(tab).startswith("Explanation 6 of 8")
    assert tab.evaluate("document.getElementById('progress').value") == 5
    assert tab.text_content("#count") == "5 of 8 answered"

    tab.reload()  # a closed tab loses nothing
    assert _where(tab).startswith("Explanation 6 of 8")
    assert tab.input_value("#annotator") == "kim"
    assert tab.text_content("#count") == "5 of 8 answered"

    rows = _export(tab)
    want = [
        (items[0], names[items[0].offered[1]], ""),
        (items[1], names[items[1].offered[0]], names[items[1].offered[2]]),
        (items[2], "none", ""),
        (items[3], "building", ""),
        (items[4], names[items[4].offered[1]], ""),
    ]
    assert [(r["image"], r["label1"], r["label2"]) for r in rows] == [
        (it.image_id, a, b) for it, a, b in want
    ]
    assert {r["annotator"] for r in rows} == {"kim"}
    assert [r["model"] for r in rows] == [it.model for it, _, _ in want]
    assert {r["theta"] for r in rows} == {"0.6"}
    assert all(float(r["seconds_spent"]) >= 0 for r in rows)
    assert list(rows[0]) == [
        "image",
        "label1",
        "label2",
        "model",
        "theta",
        "annotator",
        "seconds_spent",
    ]
    # the file reads back as the same answers
    back = parse_annotations(tab.exported, ade20k(), "annotations-kim.csv")
    assert [a.labels for a in back] == [
        (items[0].offered[1],),
        (items[1].offered[0], items[1].offered[2]),
        (),
        (2,),
        (items[4].offered[1],),
    ]
    assert tab.problems == []


def test_a_third_pick_replaces_the_second_and_a_pick_toggles(tab, page_file):
    items = make_items(2)
    tab.goto(page_file(items).as_uri())
    for key in ("1", "2", "3"):
        tab.keyboard.press(key)
    offered = [ade20k().names[c] for c in items[0].offered]
    assert tab.text_content("#picked") == f"main: {offered[0]}×second: {offered[2]}×"
    tab.keyboard.press("3")  # off again
    assert tab.text_content("#picked") == f"main: {offered[0]}×"
    tab.keyboard.press("0")  # none clears the labels
    assert tab.text_content("#picked") == "Answer: none / unclear"
    tab.keyboard.press("1")  # and a label clears none
    assert tab.text_content("#picked") == f"main: {offered[0]}×"
    assert tab.problems == []


def test_the_answers_of_two_pages_do_not_mix(tab, page_file, tmp_path):
    first = tmp_path / "first.html"
    first.write_text(page_file(make_items(3)).read_text())
    tab.goto(first.as_uri())
    tab.keyboard.press("1")
    other = page_file(make_items(4, seed=3))  # another sample, another file
    tab.goto(other.as_uri())
    assert tab.text_content("#count") == "0 of 4 answered"
    tab.goto(first.as_uri())
    assert tab.text_content("#count") == "1 of 3 answered"


def test_names_from_the_study_stay_text_in_the_browser(tab, page_file):
    evil = '<img src=x onerror="alert(1)">'
    names = ("other", evil, "sky", "road")
    voc = Vocabulary("evil", names, np.zeros((4, 3), np.uint8))
    items = [
        type(it)(it.image_id, it.model, it.theta, it.photo, it.region, it.heat, (1, 2))
        for it in make_items(2)
    ]
    tab.goto(page_file(items, title=f"study {evil}", vocabulary=voc).as_uri())
    assert tab.text_content("h1") == f"study {evil}"
    assert tab.text_content("#offered button:nth-child(1)") == f"1 {evil}"
    assert tab.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert tab.problems == []  # no alert, no blocked load
    # an inline script the page did not bring is refused by its policy
    tab.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"
    )
    assert tab.evaluate("window.injected === undefined")
    assert any("Content Security Policy" in p for p in tab.problems)


def test_the_page_loads_nothing(tab, page_file):
    requests = []
    tab.on("request", lambda r: requests.append(r.url))
    tab.goto(page_file().as_uri())
    tab.keyboard.press("1")
    tab.keyboard.press("Enter")
    assert {re.sub(r":.*", "", u) for u in requests} <= {"file", "data"}
    state = tab.evaluate(
        "JSON.parse(localStorage.getItem(Object.keys(localStorage).find(k => "
        "k.startsWith('citylens-annotate:'))))"
    )
    assert state["pos"] == 1 and len(state["answers"]) >= 1
    json.dumps(state)


def test_keys_after_the_name_answer_and_enter_on_a_button_is_that_buttons(tab, page_file):
    items = make_items(3)
    tab.goto(page_file(items).as_uri())
    tab.click("#annotator")
    tab.keyboard.type("kim")
    tab.keyboard.press("Enter")  # leaves the name box
    tab.keyboard.press("1")
    assert tab.input_value("#annotator") == "kim"
    assert tab.text_content("#count") == "1 of 3 answered"
    tab.keyboard.press("Enter")
    assert _where(tab).startswith("Explanation 2 of 3")
    tab.focus("#back")
    tab.keyboard.press("Enter")  # Back's Enter goes back
    assert _where(tab).startswith("Explanation 1 of 3")
    tab.confirm = True
    tab.click("#restart")
    assert tab.text_content("#count") == "0 of 3 answered"
    assert _where(tab).startswith("Explanation 1 of 3")


def test_a_shared_name_is_exported_as_its_index(tab, page_file):
    items = make_items(1)
    tab.goto(page_file(items).as_uri())
    tab.keyboard.press("/")
    tab.keyboard.type("screen #131")
    tab.keyboard.press("Enter")
    tab.keyboard.press("Escape")
    rows = _export(tab)
    assert rows[0]["label1"] == "131"
    assert parse_annotations(tab.exported, ade20k(), "x.csv")[0].labels == (131,)


def test_without_segmenter_classes_the_page_says_to_search(tab, page_file):
    items = [
        type(it)(it.image_id, it.model, it.theta, it.photo, it.region, it.heat, ())
        for it in make_items(2)
    ]
    tab.goto(page_file(items).as_uri())
    assert "search for the object" in tab.text_content("#offered")
    tab.keyboard.press("1")  # nothing offered: nothing picked
    assert tab.text_content("#count") == "0 of 2 answered"
    tab.keyboard.press("/")
    tab.keyboard.type("road")
    tab.keyboard.press("Enter")
    assert tab.text_content("#count") == "1 of 2 answered"
    assert tab.problems == []
