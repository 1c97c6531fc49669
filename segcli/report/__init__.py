"""HTML reports: `segcli predict --report` (a gallery of the run) and `segcli evaluate --report FILE.html`.

Static files readable offline: no scripts, no network; charts are inline SVG drawn by matplotlib, pages are
Jinja2 templates with autoescaping (file names, class names and errors always appear as text). Both are
the `[report]` extra, imported only when a report is written.

charts.py   bar charts, histogram, heat map → SVG markup
html.py     the template environment
gallery.py  the predict report: pages, thumbnails
scores.py   the evaluate report
"""
