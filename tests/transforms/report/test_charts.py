"""The SVG chart library: axes that cover the data, and charts drawn from plain numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from distilbeam.transforms.report import charts

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_cover_the_peak():
    for peak in (0.3, 1, 7, 20, 99, 1234.5):
        top, ticks = charts.nice_ticks(peak)
        assert top >= peak and ticks[0] == 0 and ticks[-1] == top and len(ticks) <= 6


def test_charts_of_nothing_are_empty():
    assert charts.svg_bars([]) == charts.svg_histogram([]) == charts.svg_steps([]) == ""


def test_a_step_line_over_training_steps_names_its_own_ticks_and_colour():
    losses = [[0.0, 2.3], [100.0, 1.1], [200.0, 0.6], [300.0, 0.4]]
    svg = ET.fromstring(charts.svg_steps(losses, colour="#c44e52", x_label=lambda t: f"step {t:.0f}"))
    assert svg.find(f"{SVG}polyline").get("stroke") == "#c44e52"
    x_labels = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert x_labels == ["step 0", "step 100", "step 200", "step 300", "step 400"]
    # one horizontal run per point: the line steps up or down only at each point's start
    points = svg.find(f"{SVG}polyline").get("points").split()
    assert len(points) == 2 * len(losses)


def test_bars_escape_their_labels_and_shorten_long_ones():
    svg = charts.svg_bars([("<b>" + "x" * 30, 3), ("y", 1)])
    root = ET.fromstring(svg)  # well-formed: the label is escaped
    names = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert names[0] == "<b>" + "x" * 18 + "…" and names[1] == "y"


def test_a_plot_maps_zero_to_its_x_axis_and_its_peak_to_the_top_margin():
    plot = charts.Plot.fit(400, 200, (40, 10, 10, 30), highest=7, x_end=50)
    assert (plot.peak, plot.ticks) == (8, [0, 2, 4, 6, 8])
    assert (plot.y(0), plot.y(plot.peak), plot.base) == (170, 10, 170)
    assert (plot.x(0), plot.x(50)) == (40, 390)
